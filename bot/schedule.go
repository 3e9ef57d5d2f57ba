package bot

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"issuebot/guance"
)

// Spending the Guance budget.
//
// Guance allows 20 requests a minute per key and the bot spends Config.RateLimit of them.
// People's writes (thread replies, clicks) wait on the limiter with PriorityHigh and have
// a reserve that background work never takes (Reserve). The rest is spent here, by one
// loop for every background need: one request per turn, turns spaced evenly over the
// window, so the window never fills in a burst and then stalls. The time of the next turn
// is kept in the store, so a restarted process (or a new leader) continues the same pace
// instead of spending again what its predecessor just spent.
//
// Each turn goes to whichever of the new-issue poll and the watcher was served longer
// ago, among those that have something to do: the poll when POLL_INTERVAL has passed
// since the last one, the watcher when an issue needs a look (see watcher.go). So neither
// starves: with both busy they share the turns equally, and either takes every turn the
// other does not need. POLL_INTERVAL is how often new issues are looked for when the
// budget allows, not a claim on the budget.
//
// Webhook hints bring turns forward without adding any. While a hint waits (a hook on
// this replica, or on another: the store's metaHintSeq changes), the next turn may begin
// up to half a spacing before its time, though never sooner than half a spacing after
// the previous turn nor on a leader's first turn, and only while the limiter's window
// has room for it and one more request. The turn after it is due a spacing after the
// one it replaced, and a turn begun early that found nothing to do keeps its time.
// While hooks come the turns are spaced for one request a window fewer, which leaves
// that room. And while a hint waits, no two turns in a row go elsewhere (to a poll, a
// re-read, or the watcher's turn for the rest). So one hinted issue waits about half a
// spacing, and at most one more turn, while the window has room.

// metaNextTurn is the store's record of the next background turn (unix ms).
const metaNextTurn = "budget.nextTurn"

// turnEvery is the spacing of background turns when people write little: the window
// shared by the requests left after the reserve for people's writes, less one kept
// spare for the requests a turn sometimes adds (a second list page, the level list
// every ten minutes), so the window does not fill up and stall the turns.
func (b *Bot) turnEvery() time.Duration {
	return b.cfg.BudgetWindow / time.Duration(max(b.cfg.RateLimit-Reserve(b.cfg.RateLimit)-1, 1))
}

// turnSpacing is the spacing of the next background turn: as turnEvery, unless
// people's writes took more than the reserve in the current window, in which case
// background work slows down to leave them that much and one more. (The limiter
// would grant people first anyway, but a background turn that takes a free slot
// makes the next reply or click wait for the window to move.) The turn waiting is
// looked at again as their writes leave the window (turnTime), so a backlog after an
// outage does not hold background work back a window longer than it is there.
// While hooks come, one more request of each window is left free (see above).
func (b *Bot) turnSpacing() time.Duration {
	people := Reserve(b.cfg.RateLimit)
	if b.cfg.Budget != nil {
		people = max(people, b.cfg.Budget().HighUsed+1)
	}
	spare := 1
	if b.hooksActive(b.now()) {
		spare = 2
	}
	return b.cfg.BudgetWindow / time.Duration(max(b.cfg.RateLimit-people-spare, 1))
}

// pollEvery is the poll cadence while the watcher is busy too: the first turn once
// POLL_INTERVAL has passed, and at most every other turn.
func (b *Bot) pollEvery() time.Duration {
	turn := b.turnEvery()
	turns := (max(b.cfg.PollInterval, 2*turn) + turn - 1) / turn
	return turns * turn
}

// syncEvery is the watcher's cadence while polls are due as well: the turns left
// between polls.
func (b *Bot) syncEvery() time.Duration {
	turns := b.cfg.BudgetWindow / b.turnEvery()
	polls := (b.cfg.BudgetWindow + b.pollEvery() - 1) / b.pollEvery()
	return b.cfg.BudgetWindow / max(turns-polls, 1)
}

// turn is one background need the scheduler can serve.
type turn int

const (
	turnPoll turn = iota
	turnWatch
)

// turns is the scheduler's decision state; it lives in the leader's memory.
type turns struct {
	lastPoll, lastWatch time.Time // when each was last served
}

// order returns what to offer this turn, first choice first: the poll only when due
// (or asked for since the last one: hint is when Guance's webhook named an unknown
// issue), and of two candidates the one served longer ago — or the watcher, when
// hintPassed (a hinted issue waits and the last turn went elsewhere).
func (s *turns) order(now time.Time, pollInterval time.Duration, hint time.Time, hintPassed bool) []turn {
	pollDue := s.lastPoll.IsZero() || now.Sub(s.lastPoll) >= pollInterval || hint.After(s.lastPoll)
	switch {
	case !pollDue:
		return []turn{turnWatch}
	case hintPassed, s.lastPoll.After(s.lastWatch):
		return []turn{turnWatch, turnPoll}
	}
	return []turn{turnPoll, turnWatch}
}

// runBudget spends the background budget until ctx ends.
func (b *Bot) runBudget(ctx context.Context) {
	every := b.turnEvery()
	b.logger.Info("spending the Guance budget", "turn_every", every, "poll_interval", b.cfg.PollInterval)
	next := turnTime{due: b.loadNextTurn(ctx)} // a predecessor's: not narrowed, at most a spacing away
	var (
		s    turns
		last time.Time // when the previous turn that made a request began
		seen string    // metaHintSeq as last read
	)
	if b.cfg.SharedHints {
		seen, _ = b.state.Meta(ctx, metaHintSeq) // hooks before this term are in the records
	}
	for {
		due, ok := b.waitTurn(ctx, next, last, &seen)
		if !ok {
			return
		}
		now := b.now()
		spentBefore := b.spent()
		served := false
		for _, t := range s.order(now, b.pollInterval(now), b.pollHint(ctx), b.watch.hintPassed()) {
			if served = b.serve(ctx, t); served {
				if t == turnPoll {
					s.lastPoll = now
					b.watch.passHint()
				} else {
					s.lastWatch = now
				}
				break
			}
		}
		if !served {
			if now.Before(due) {
				continue // begun early for nothing: the turn keeps its time
			}
			// Nothing needed a request: look again when the poll is due, or sooner
			// if the watcher gets work (a poll or a thread event flags an issue).
			wait := min(every, s.lastPoll.Add(b.cfg.PollInterval).Sub(now))
			next = turnTime{due: now.Add(max(wait, 100*time.Millisecond))}
			continue
		}
		next = b.chargeTurn(latest(now, due), spentBefore)
		last = now
		b.saveNextTurn(ctx, next.due)
	}
}

// chargeTurn returns when the turn after one due at from is, spent being spent() when
// it began. A turn that took more than one request (a second list page, the channel or
// level list) takes as many turns' worth of the budget, at most maxTurnCost. People's
// writes granted meanwhile are not the turn's: turnSpacing makes room for them, and
// only while they are in the window (see turnTime). A turn begun early for a hint
// keeps the cadence: from is the time it was due.
func (b *Bot) chargeTurn(from time.Time, spent uint64) turnTime {
	cost := time.Duration(min(max(b.spent()-spent, 1), maxTurnCost))
	return turnTime{
		due:   from.Add(b.turnSpacing() * cost),
		from:  from,
		cost:  cost,
		floor: b.now().Add(b.turnEvery()),
	}
}

// turnTime is when the next turn is due: at due, or sooner once the spacing it was
// charged at narrows — people's writes that widened it leave the window, hooks stop —
// at from plus cost spacings as they are then, though no sooner than floor. (After an
// outage, a backlog of thread replies can fill a window and widen the spacing to the
// whole window; the turn after it need not wait that long once they have passed.)
type turnTime struct {
	due  time.Time
	from time.Time     // zero: due is fixed (a successor's, or a turn that found nothing to do)
	cost time.Duration // spacings from from
	// floor is a spacing after the turn ended: one whose request waited behind
	// people's writes is not followed by another at once when the spacing narrows.
	floor time.Time
}

// at is the turn's time with the spacing as it is now.
func (t turnTime) at(spacing time.Duration) time.Time {
	if t.from.IsZero() {
		return t.due
	}
	if re := latest(t.from.Add(spacing*t.cost), t.floor); re.Before(t.due) {
		return re
	}
	return t.due
}

// earliestTurn is the soonest a turn due at due may begin while a hint waits: half a
// spacing early, and no sooner than half a spacing after the previous turn (last; the
// zero time, on a leader's first turn: not early at all, the predecessor's last turn
// is not known).
func earliestTurn(due, last time.Time, spacing time.Duration) time.Time {
	if last.IsZero() {
		return due
	}
	early := latest(due.Add(-spacing/2), last.Add(spacing/2))
	if early.After(due) {
		return due
	}
	return early
}

// roomForEarly reports whether the limiter's window has room for a turn begun early
// and one more request (the one a turn sometimes adds), besides what it keeps for
// people's writes: their reserve, or one more once they took it (as turnSpacing).
func roomForEarly(st guance.LimiterStats) bool {
	return st.Limit-st.Used-max(st.Reserve-st.HighUsed, 1) >= 2
}

// waitTurn waits until the turn next begins: at its time (turnTime.at, looked at again
// as the spacing narrows), or from earliestTurn on as soon as a hint waits and the
// window has room (roomForEarly). seen is metaHintSeq as last read, updated here. It
// returns the turn's time, and false when ctx ends.
func (b *Bot) waitTurn(ctx context.Context, next turnTime, last time.Time, seen *string) (time.Time, bool) {
	for {
		now, spacing := b.now(), b.turnSpacing()
		due := next.at(spacing)
		if !now.Before(due) {
			return due, ctx.Err() == nil
		}
		early := earliestTurn(due, last, spacing)
		look := max(spacing/16, 10*time.Millisecond) // how often another replica's hooks are looked for
		wake := due
		switch {
		case now.Before(early):
			wake = early
		case b.hintWaits(ctx, seen, due):
			if b.cfg.Budget == nil || roomForEarly(b.cfg.Budget()) {
				return due, ctx.Err() == nil
			}
			wake = latest(now.Add(look), early)
		case b.cfg.SharedHints:
			wake = now.Add(look)
		}
		if !next.from.IsZero() && spacing > b.turnEvery() {
			// People's writes or hooks widened the spacing: look again as it narrows.
			if look := now.Add(b.turnEvery() / 4); look.Before(wake) {
				wake = look
			}
		}
		t := time.NewTimer(min(wake.Sub(now), due.Sub(now)))
		select {
		case <-ctx.Done():
			t.Stop()
			return due, false
		case <-b.hintWake:
			t.Stop()
		case <-t.C:
		}
	}
}

// hintWaits reports whether a hinted issue waits for the watcher: one the last step
// left, or (with SharedHints) a hook on another replica since (metaHintSeq differs
// from *seen). due is the turn's time.
func (b *Bot) hintWaits(ctx context.Context, seen *string, due time.Time) bool {
	if b.cfg.SharedHints {
		deadline := b.now().Add(hintSeqWait)
		if due.Before(deadline) {
			deadline = due
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		v, err := b.state.Meta(rctx, metaHintSeq)
		cancel()
		if err == nil && v != *seen {
			*seen = v
			b.watch.hintCame(b.now())
		}
	}
	return b.watch.hintWaiting()
}

// hintSeqWait bounds a read of metaHintSeq (as does the turn's time: a slow store does
// not hold a turn past it).
const hintSeqWait = 200 * time.Millisecond

// hookPollEvery is how often new issues are polled for while Guance's webhook is
// active (a hint within the last window), in budget windows: the hooks announce new
// issues themselves (a hint naming an unknown issue makes a poll due), so most turns go
// to the replies the hooks point at; polling stays, as the source of truth.
const hookPollEvery = 2

// pollInterval is the interval the scheduler polls at now: POLL_INTERVAL, longer while
// hooks are coming.
func (b *Bot) pollInterval(now time.Time) time.Duration {
	if b.hooksActive(now) {
		return max(b.cfg.PollInterval, b.cfg.BudgetWindow/hookPollEvery)
	}
	return b.cfg.PollInterval
}

// hooksActive reports whether Guance's webhook named an issue within the last window.
func (b *Bot) hooksActive(now time.Time) bool {
	b.watch.mu.Lock()
	last := b.watch.lastHint
	b.watch.mu.Unlock()
	return !last.IsZero() && now.Sub(last) < b.cfg.BudgetWindow
}

// maxTurnCost bounds how many turns' worth of budget one turn is charged.
const maxTurnCost = 3

// spent is how many Guance calls the limiter has granted so far to all but people's
// writes (PriorityHigh): to background work (0 without a limiter).
func (b *Bot) spent() uint64 {
	if b.cfg.Budget == nil {
		return 0
	}
	st := b.cfg.Budget()
	return st.Granted - st.HighGranted
}

// serve gives the turn to t and reports whether t used it (made a request).
func (b *Bot) serve(ctx context.Context, t turn) bool {
	ctx = guance.WithPriority(ctx, guance.PriorityLow)
	switch t {
	case turnPoll:
		if err := b.pollOnce(ctx); err != nil && ctx.Err() == nil {
			b.logPollError(err)
		}
		return true
	default:
		did, err := b.syncStep(ctx)
		if err != nil && ctx.Err() == nil {
			b.logPollError(fmt.Errorf("watch issues: %w", err))
		}
		return did
	}
}

// loadNextTurn reads when the previous leader's next turn was due; no later than one
// spacing from now, so a clock that went back cannot stall the budget.
func (b *Bot) loadNextTurn(ctx context.Context) time.Time {
	now := b.now()
	v, err := b.state.Meta(ctx, metaNextTurn)
	if err != nil || v == "" {
		return now
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return now
	}
	if next, limit := time.UnixMilli(ms), now.Add(b.turnEvery()); next.Before(limit) {
		return next
	}
	return now.Add(b.turnEvery())
}

// saveNextTurn records the next turn for a successor.
func (b *Bot) saveNextTurn(ctx context.Context, next time.Time) {
	if err := b.state.SetMeta(ctx, metaNextTurn, strconv.FormatInt(next.UnixMilli(), 10)); err != nil && ctx.Err() == nil {
		b.logger.Warn("record the next budget turn", "err", err)
	}
}
