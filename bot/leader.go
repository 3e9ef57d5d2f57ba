package bot

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"

	"issuebot/store"
)

// Leadership. One replica at a time — the holder of the poller lease — talks to Guance
// and works the durable queues. Every change of holder starts a new lease term, also a
// restart of the same instance (which takes its own lease at once), and work claims
// carry the term they were taken in, so a dead or deposed leader's claims are void as
// soon as the next term begins instead of holding their jobs until a timeout. When a
// term ends, no job starts, and the jobs in hand finish the requests under way but
// start no Guance request they were still waiting for (leaderCall).
const (
	leasePoller = "poller"
	// leaseTTL bounds how long a killed leader's lease keeps the others waiting.
	leaseTTL = 6 * time.Second
	// leaseRenew is how often the leader renews and a standby replica tries to take over,
	// so a killed leader is replaced within leaseTTL + leaseRenew.
	leaseRenew = 2 * time.Second
	// leaseGiveUp is how long a leader that cannot renew keeps leading: well before the
	// lease runs out and another replica may take it.
	leaseGiveUp = leaseTTL * 2 / 3
)

// holder is this process in the poller lease.
func (b *Bot) holder() store.Holder {
	return store.Holder{Instance: b.cfg.InstanceID, Incarnation: b.incarnation}
}

// runLeader leads while this replica holds the poller lease and keeps trying to take it
// otherwise.
func (b *Bot) runLeader(ctx context.Context) error {
	h := b.holder()
	for {
		term, err := b.state.AcquireLease(ctx, leasePoller, h, leaseTTL)
		if err != nil && ctx.Err() == nil {
			b.logger.Warn("take poller lease", "err", err)
		}
		if term > 0 {
			b.logger.Info("holding the poller lease", "instance", h.Instance, "term", term)
			b.lead(ctx, term)
			if ctx.Err() == nil {
				b.logger.Warn("lost the poller lease", "instance", h.Instance, "term", term)
			}
		}
		if !sleepCtx(ctx, leaseRenew) {
			// Hand the lease over at once on a clean shutdown.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = b.state.ReleaseLease(rctx, leasePoller, h)
			cancel()
			return nil
		}
	}
}

// lead runs the poller, the watcher and every queue worker for one lease term, until ctx
// ends or the lease is lost.
func (b *Bot) lead(ctx context.Context, term int64) {
	b.term.Store(term)
	defer b.term.Store(0)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := func() {
		b.term.Store(0) // no job starts any more, before the work in hand is cancelled
		cancel()
	}
	g, gctx := errgroup.WithContext(lctx)
	g.Go(func() error {
		renewed := b.now()
		for sleepCtx(gctx, leaseRenew) {
			// A renew that hangs must not outlast the lease: it gets until the give-up.
			rctx, rcancel := context.WithTimeout(gctx, max(leaseGiveUp-b.now().Sub(renewed), 100*time.Millisecond))
			got, err := b.state.AcquireLease(rctx, leasePoller, b.holder(), leaseTTL)
			rcancel()
			switch {
			case err == nil && got != term:
				// Another replica (or a newer process of this instance) holds it, or it
				// expired and was taken again under a new term: this term is over.
				lost()
				return nil
			case err == nil:
				renewed = b.now()
			case gctx.Err() == nil:
				b.logger.Warn("renew poller lease", "err", err)
				if b.now().Sub(renewed) > leaseGiveUp {
					lost()
					return nil
				}
			}
		}
		return nil
	})
	b.loadKey(gctx)
	if err := b.requeuePatches(gctx); err != nil && gctx.Err() == nil {
		b.logger.Warn("look for cards left unpatched", "err", err)
	}
	for _, run := range []func(context.Context){b.cards.Run, b.replies.Run, b.status.Run, b.thread.Run, b.held.Run, b.patches.Run, b.answers.Run} {
		g.Go(func() error { run(gctx); return nil })
	}
	g.Go(func() error { b.runBudget(gctx); return nil })
	_ = g.Wait()
}
