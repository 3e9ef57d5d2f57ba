package bot

import (
	"context"
	"errors"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/guance"
)

// Every durable queue of the bot runs on one engine (package jobs); a flow supplies its
// payload type and what to do with one job. The queues, their ordering keys and their
// files:
//
//	cards    one chat's cards in order          newcards.go
//	replies  one issue's chat messages → Guance  toguance.go
//	thread   one issue's Guance replies → chat   tochat.go
//	held     replies waiting for the bot's key   tochat.go
//	status   one issue's status changes          buttons.go
//	patches  one card's re-render                patches.go
//	answers  one chat's answers to people        answers.go

// refusedRetry is how long a job waits after an answer a retry cannot cure (the bot
// removed from the chat, a refused API key): an operator can fix the cause without
// losing the work.
const refusedRetry = 10 * time.Minute

// retryMax caps the backoff of transient failures.
const retryMax = 2 * time.Minute

// newQueues builds the engine and every queue.
func (b *Bot) newQueues() {
	e := &jobs.Engine{
		Store: b.state, Logger: b.logger, Classify: b.classify, Lease: leasePoller, Term: b.term.Load,
		Now: func() time.Time { return b.now() },
		Observer: jobs.Observer{
			Depth: func(queue string, n int) {
				b.metrics.queued.WithLabelValues(queue).Set(float64(n))
				switch queue {
				case queueCards:
					b.metrics.cardsQueued.Set(float64(n))
				case queueReplies:
					b.metrics.repliesQueued.Set(float64(n))
				}
			},
			Retried: func(queue, reason string) {
				b.metrics.jobRetries.WithLabelValues(queue, reason).Inc()
				if queue == queueCards && reason == jobs.ReasonRefused {
					b.metrics.cardFailures.Inc()
				}
			},
			Dropped: func(queue, reason string) {
				b.metrics.jobsDropped.WithLabelValues(queue, reason).Inc()
				if queue == queueThread {
					b.metrics.threadDrops.Inc()
				}
			},
		},
	}
	b.cards = jobs.NewQueue(e, queueCards, b.deliverCard)
	b.cards.Key = func(p cardJob) string {
		if p.Thread != "" {
			return "thread:" + p.Thread // asked for from a digest: not behind the chat's storm
		}
		return p.ChatID
	}
	b.cards.Parallel = maxChatsInFlight
	b.replies = jobs.NewQueue(e, queueReplies, b.postReply)
	b.replies.Key = replyKey
	b.thread = jobs.NewQueue(e, queueThread, b.postToThread)
	b.thread.Key = func(p threadJob) string { return p.IssueUUID }
	b.thread.Less = func(x, y *jobs.Job[threadJob]) bool {
		if x.Payload.CreateAt != y.Payload.CreateAt {
			return x.Payload.CreateAt < y.Payload.CreateAt
		}
		return x.Payload.Seq < y.Payload.Seq
	}
	b.held = jobs.NewQueue(e, queueHeld, b.settleHeld)
	b.status = jobs.NewQueue(e, queueStatus, b.statusWork)
	b.status.Key = func(p statusJob) string { return p.IssueUUID }
	b.patches = jobs.NewQueue(e, queuePatches, b.patchCard)
	b.answers = jobs.NewQueue(e, queueAnswers, b.sendAnswer)
	b.answers.Key = func(p answerJob) string { return p.ChatID }
	b.answers.Parallel = maxChatsInFlight
}

// replyKey orders chat messages to Guance: by issue, or, for a message that arrived
// before its card was recorded (the issue unknown then), by its thread. The key is
// fixed when the job is queued (replyJob.Key), so it does not move when the issue is
// found later.
func replyKey(p replyJob) string {
	if p.Key != "" {
		return p.Key
	}
	return "issue:" + p.IssueUUID // queued by an older version
}

// classify is the one retry policy of every queue: how long a failed attempt waits,
// and why. Throttling and outages back off exponentially (at least as long as Feishu
// asks); an answer a retry cannot cure waits refusedRetry; the bot's own failures (the
// store, say) back off like outages.
func (b *Bot) classify(ctx context.Context, err error, attempts int) (time.Duration, string) {
	delay := newBackoff(b.cfg.RetryBase, retryMax).after(attempts)
	var fe *feishu.Error
	var ge *guance.Error
	switch {
	case errors.Is(err, guance.ErrThrottled):
		return delay, "throttled"
	case feishu.Retryable(ctx, err):
		return max(delay, feishu.RetryAfter(err)), "transient"
	case guance.Retryable(err), errors.Is(err, context.DeadlineExceeded):
		return delay, "transient"
	case errors.As(err, &fe), errors.As(err, &ge):
		return refusedRetry, jobs.ReasonRefused
	}
	return delay, "internal"
}

// errAbandoned marks work given up on purpose (shutdown, a test's simulated crash):
// the job stays as it is.
var errAbandoned = jobs.ErrAbandon

// leaderCall returns the context for the Guance calls of a job worked with ctx (which
// ends with the lease term, or at shutdown) whose own work runs under wctx: waiting for
// the budget ends with ctx, as waiting for a chat's pace does, and a request under way
// does not. So a leader that lost its lease starts no Guance request, also not once
// the store is back and the budget resumes (see guance.WithWaitBound).
func leaderCall(ctx, wctx context.Context) context.Context {
	return guance.WithWaitBound(guance.WithPriority(wctx, guance.PriorityHigh), ctx)
}

// stoppedWaiting reports whether err is that of a Guance call made with leaderCall(ctx,
// …) that stopped waiting for the budget because ctx ended: nothing was sent, and the
// job is to be left as it is (errAbandoned) for the next term.
func stoppedWaiting(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}
