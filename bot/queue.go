package bot

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"issuebot/bot/feishu"
	"issuebot/store"
)

// queueBatch bounds how many due jobs one pass of a queue worker reads.
const queueBatch = 100

// kick wakes a worker without blocking.
func (b *Bot) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// runQueue runs do for the due jobs of a queue, one at a time, until ctx ends; it
// looks again every second and whenever wake fires. do owns the job: it deletes it when
// done and reschedules it (retryJob) when not. A job another replica is working on is
// skipped (see withWorkClaim).
func (b *Bot) runQueue(ctx context.Context, queue string, wake chan struct{}, do func(context.Context, store.Job) error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		jobs, err := b.state.DueJobs(ctx, queue, b.now(), queueBatch)
		if err != nil && ctx.Err() == nil {
			b.logger.Warn("read queued jobs", "queue", queue, "err", err)
		}
		for _, j := range jobs {
			if ctx.Err() != nil {
				return
			}
			err := b.withWorkClaim(ctx, queue+":"+j.ID, func() error { return do(ctx, j) })
			if err != nil && !errors.Is(err, errAbandoned) && ctx.Err() == nil {
				b.logger.Warn("job not done yet", "queue", queue, "job_id", j.ID, "err", err)
			}
		}
		if n, err := b.state.CountJobs(ctx, queue); err == nil {
			b.metrics.queued.WithLabelValues(queue).Set(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// decodeJob decodes a job's payload. An unreadable job (written by an incompatible
// version, say) cannot ever be done: it is logged and dropped, and ok is false.
func decodeJob[T any](ctx context.Context, b *Bot, queue string, j store.Job) (p T, ok bool, err error) {
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		b.logger.Error("dropping an unreadable job", "queue", queue, "job_id", j.ID, "err", err)
		return p, false, b.state.DeleteJob(ctx, queue, j.ID)
	}
	return p, true, nil
}

// retryJob puts a failed job back with an exponential backoff that honours Feishu's
// reset hint; failures a retry cannot cure (the bot removed from the chat, say) wait
// ten minutes, so an operator can fix the cause without losing the work. It returns
// cause.
func (b *Bot) retryJob(ctx context.Context, queue string, j store.Job, cause error) error {
	j.Attempts++
	delay := newBackoff(b.cfg.RetryBase, 5*time.Minute).after(j.Attempts)
	if feishu.Retryable(ctx, cause) || errors.Is(cause, context.DeadlineExceeded) {
		delay = max(delay, feishu.RetryAfter(cause))
	} else if fe := (*feishu.Error)(nil); errors.As(cause, &fe) {
		delay = 10 * time.Minute
	}
	j.NotBefore = b.now().Add(delay)
	if err := b.state.PutJob(context.WithoutCancel(ctx), queue, j); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}
