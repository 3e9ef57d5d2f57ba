// Package jobs is issuebot's one engine for durable work. Every queue (cards, chat
// replies to Guance, Guance replies to threads, held replies, status changes, card
// patches) keeps its jobs in the store and runs here: jobs of one ordering key (a chat,
// an issue) run one at a time, oldest first; each attempt is claimed under the current
// lease term, so a dead or deposed leader's claim is void as soon as the next term
// starts; a failed attempt is retried after the delay its error asks for (one
// classification for every queue), snoozed, or dropped for good with the reason logged
// and counted. A flow supplies its payload type and what to do with one job.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"issuebot/store"
)

// Store is what the engine needs from the store.
type Store interface {
	PutJob(ctx context.Context, queue string, j store.Job) error
	DueJobs(ctx context.Context, queue string, now time.Time, limit int) ([]store.Job, error)
	DeleteJobIf(ctx context.Context, queue, id string, rev uint64) (bool, error)
	ClaimWork(ctx context.Context, lease, key string, term int64, ttl time.Duration) (bool, error)
	ReleaseWork(ctx context.Context, key string, term int64) error
}

// Classify turns a failed attempt's error into the delay before the next one and a
// short reason for logs and metrics ("transient", "throttled", ReasonRefused,
// "internal"). attempts counts the failures so far, this one included.
type Classify func(ctx context.Context, err error, attempts int) (delay time.Duration, reason string)

// Observer is told what the queues do, for metrics. Any field may be nil.
type Observer struct {
	Depth   func(queue string, n int)
	Retried func(queue, reason string)
	Dropped func(queue, reason string)
}

// Engine holds what every queue shares.
type Engine struct {
	Store    Store
	Logger   *slog.Logger
	Classify Classify
	Observer Observer
	// Lease names the lease whose terms fence the claims, and Term returns the term this
	// process works in; 0 means it does not lead, and no job is started.
	Lease string
	Term  func() int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (e *Engine) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

// ReasonRefused is the Classify reason of an answer a retry cannot cure (the bot
// removed from a chat, a refused API key): the failure is logged as an error, since
// someone has to act, and the job is kept for when they have.
const ReasonRefused = "refused"

// claimTTL only bounds how long a claim is kept; a newer term voids it at once.
const claimTTL = 10 * time.Minute

// Outcomes a Work function may return besides nil (done) and a plain error (retry after
// the delay Classify gives).
var (
	// ErrAbandon leaves the job as it is, not counted as an attempt: the process is
	// shutting down, or the job cannot be worked on by this worker now.
	ErrAbandon = errors.New("jobs: abandoned")
)

type laterError struct {
	d   time.Duration
	why error
}

func (e *laterError) Error() string { return fmt.Sprintf("later (%v): %v", e.d, e.why) }
func (e *laterError) Unwrap() error { return e.why }

// Later asks for the job to run again after d, without counting an attempt (it waits
// for something, such as an earlier step, rather than failing).
func Later(d time.Duration, why error) error { return &laterError{d: d, why: why} }

type dropError struct {
	reason string
	why    error
}

func (e *dropError) Error() string { return fmt.Sprintf("dropped (%s): %v", e.reason, e.why) }
func (e *dropError) Unwrap() error { return e.why }

// Drop gives the job up for good: it is removed, and the reason is logged as an error
// and counted.
func Drop(reason string, why error) error { return &dropError{reason: reason, why: why} }

// Job is one queued job with its decoded payload.
type Job[T any] struct {
	ID string
	// Attempts counts the failed attempts before this one.
	Attempts int
	Enqueued time.Time
	Payload  T

	raw store.Job
	q   *Queue[T]
}

// Save writes the job's payload back, so that a later attempt knows what this one did
// (that a send was attempted, say); call it before the step that must not be repeated
// blindly.
func (j *Job[T]) Save(ctx context.Context) error {
	data, err := json.Marshal(j.Payload)
	if err != nil {
		return fmt.Errorf("encode job %s of %s: %w", j.ID, j.q.Name, err)
	}
	raw := j.raw
	raw.Payload, raw.Rev = data, newRev()
	if err := j.q.e.Store.PutJob(ctx, j.q.Name, raw); err != nil {
		return fmt.Errorf("save job %s of %s: %w", j.ID, j.q.Name, err)
	}
	j.raw = raw
	return nil
}

// Queue is one durable queue of jobs with payloads of type T.
type Queue[T any] struct {
	// Name is the store's queue name.
	Name string
	// Key returns a job's ordering key: the jobs of one key run one at a time, in
	// order. nil means every job is its own key.
	Key func(T) string
	// Less orders the jobs of one key; nil means by Enqueued, then id.
	Less func(a, b *Job[T]) bool
	// Parallel is how many keys may be worked on at once; 0 means 1.
	Parallel int
	// Work does one job. nil means done; see Later, Drop and ErrAbandon for the others.
	Work func(ctx context.Context, j *Job[T]) error

	e    *Engine
	wake chan struct{}
	log  *slog.Logger
}

// NewQueue returns a queue run by e. Set its fields before Run.
func NewQueue[T any](e *Engine, name string, work func(ctx context.Context, j *Job[T]) error) *Queue[T] {
	logger := e.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Queue[T]{Name: name, Work: work, e: e, wake: make(chan struct{}, 1), log: logger.With("queue", name)}
}

// newRev returns a fresh job revision.
func newRev() uint64 { return rand.Uint64() | 1 }

// Enqueue stores a job, replacing one with the same id (re-enqueues coalesce), and
// wakes the queue. A job replaced while it is worked on stays queued when the attempt
// succeeds; a failed attempt's retry replaces it again (its work is the same).
func (q *Queue[T]) Enqueue(ctx context.Context, id string, payload T, notBefore time.Time) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode job %s of %s: %w", id, q.Name, err)
	}
	now := q.e.now()
	j := store.Job{ID: id, Payload: data, NotBefore: notBefore, Enqueued: now, Rev: newRev()}
	if err := q.e.Store.PutJob(ctx, q.Name, j); err != nil {
		return fmt.Errorf("queue job %s in %s: %w", id, q.Name, err)
	}
	q.Wake()
	return nil
}

// Wake makes the queue look at its jobs now.
func (q *Queue[T]) Wake() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Jobs returns the queue's jobs, due or not, decoded; unreadable ones are skipped.
func (q *Queue[T]) Jobs(ctx context.Context) ([]*Job[T], error) {
	all, err := q.e.Store.DueJobs(ctx, q.Name, farFuture, 0)
	if err != nil {
		return nil, fmt.Errorf("read the %s queue: %w", q.Name, err)
	}
	out := make([]*Job[T], 0, len(all))
	for _, raw := range all {
		if j, err := q.decode(raw); err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

// farFuture is "any time": a queue's pass reads every job, so that a key's head is
// known even while it is not due.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (q *Queue[T]) decode(raw store.Job) (*Job[T], error) {
	j := &Job[T]{ID: raw.ID, Attempts: raw.Attempts, Enqueued: raw.Enqueued, raw: raw, q: q}
	if len(raw.Payload) == 0 {
		return j, nil // a job that is all id (a card patch of an older version)
	}
	if err := json.Unmarshal(raw.Payload, &j.Payload); err != nil {
		return nil, fmt.Errorf("decode job %s of %s: %w", raw.ID, q.Name, err)
	}
	return j, nil
}

func (q *Queue[T]) key(j *Job[T]) string {
	if q.Key == nil {
		return j.ID
	}
	return q.Key(j.Payload)
}

func (q *Queue[T]) less(a, b *Job[T]) bool {
	if q.Less != nil {
		return q.Less(a, b)
	}
	if !a.Enqueued.Equal(b.Enqueued) {
		return a.Enqueued.Before(b.Enqueued)
	}
	return a.ID < b.ID
}

// Run works the queue until ctx ends, then waits for the jobs in hand.
func (q *Queue[T]) Run(ctx context.Context) {
	var (
		mu sync.Mutex
		// busy holds the keys being worked on, and finished those done since the last
		// read: a key stays busy until a read made after its job ended, so a job is
		// never started again from a read that predates its removal.
		busy     = map[string]bool{}
		finished = map[string]bool{}
		wg       sync.WaitGroup
		sem      = make(chan struct{}, max(q.Parallel, 1))
	)
	defer wg.Wait()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		mu.Lock()
		for k := range finished {
			delete(busy, k)
		}
		clear(finished)
		mu.Unlock()
		heads, err := q.heads(ctx, q.e.now())
		if err != nil && ctx.Err() == nil {
			q.log.Warn("read queued jobs", "err", err)
		}
		for _, j := range heads {
			k := q.key(j)
			mu.Lock()
			if busy[k] {
				mu.Unlock()
				continue
			}
			busy[k] = true
			mu.Unlock()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				moved := q.attempt(ctx, j)
				mu.Lock()
				finished[k] = true
				mu.Unlock()
				if moved {
					q.Wake() // the key's next job may go now
				}
			}()
		}
		select {
		case <-ctx.Done():
		case <-q.wake:
		case <-tick.C:
		}
	}
}

// Pass works the first job of every key once, due or not, one after another, and
// returns when they are done. It lets tests step a queue; Run is what the bot uses.
func (q *Queue[T]) Pass(ctx context.Context) error {
	heads, err := q.heads(ctx, farFuture)
	for _, j := range heads {
		q.attempt(ctx, j)
	}
	return err
}

// heads reads the queue and returns, per key, its first job if it is due at now.
// Unreadable jobs are dropped.
func (q *Queue[T]) heads(ctx context.Context, now time.Time) ([]*Job[T], error) {
	all, err := q.e.Store.DueJobs(ctx, q.Name, farFuture, 0)
	if err != nil {
		return nil, fmt.Errorf("read the %s queue: %w", q.Name, err)
	}
	if q.e.Observer.Depth != nil {
		q.e.Observer.Depth(q.Name, len(all))
	}
	byKey := map[string]*Job[T]{}
	var keys []string
	for _, raw := range all {
		j, err := q.decode(raw)
		if err != nil {
			// Written by an incompatible version, say: it can never be done.
			q.drop(ctx, raw, "unreadable", err)
			continue
		}
		k := q.key(j)
		h, ok := byKey[k]
		if !ok {
			keys = append(keys, k)
		}
		if !ok || q.less(j, h) {
			byKey[k] = j
		}
	}
	out := make([]*Job[T], 0, len(keys))
	for _, k := range keys {
		if h := byKey[k]; !h.raw.NotBefore.After(now) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *Job[T]) int { return a.raw.NotBefore.Compare(b.raw.NotBefore) })
	return out, nil
}

// attempt claims and works one job and applies the outcome; it reports whether the job
// moved (done, dropped or rescheduled), not when another worker holds it or it was
// abandoned: those are looked at again at the next tick, not in a hot loop.
func (q *Queue[T]) attempt(ctx context.Context, j *Job[T]) bool {
	term := q.e.Term()
	if term == 0 {
		return false
	}
	claim := q.Name + ":" + j.ID
	ok, err := q.e.Store.ClaimWork(ctx, q.e.Lease, claim, term, claimTTL)
	if err != nil {
		if ctx.Err() == nil {
			q.log.Warn("claim a job", "job_id", j.ID, "err", err)
		}
		return false
	}
	if !ok {
		return false // another worker of this term has it, or this process was deposed
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := q.e.Store.ReleaseWork(rctx, claim, term); err != nil {
			q.log.Warn("release a job's claim; it holds the job until it expires", "job_id", j.ID, "err", err)
		}
	}()
	werr := q.Work(ctx, j)
	// The outcome is written even if shutdown began meanwhile: the work is done.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var later *laterError
	var drop *dropError
	switch {
	case werr == nil:
		if _, err := q.e.Store.DeleteJobIf(wctx, q.Name, j.ID, j.raw.Rev); err != nil {
			q.log.Warn("remove a done job; it will be tried again", "job_id", j.ID, "err", err)
			return false
		}
		return true
	case errors.Is(werr, ErrAbandon):
		return false
	case errors.As(werr, &drop):
		q.drop(wctx, j.raw, drop.reason, drop.why)
		return true
	case errors.As(werr, &later):
		q.reschedule(wctx, j, q.e.now().Add(later.d), j.raw.Attempts)
		return true
	}
	attempts := j.raw.Attempts + 1
	delay, reason := time.Second, "internal"
	if q.e.Classify != nil {
		delay, reason = q.e.Classify(wctx, werr, attempts)
	}
	if q.e.Observer.Retried != nil {
		q.e.Observer.Retried(q.Name, reason)
	}
	level := slog.LevelWarn
	if reason == ReasonRefused {
		level = slog.LevelError // someone has to act
	}
	q.log.Log(wctx, level, "job failed; retrying", "job_id", j.ID, "attempts", attempts, "reason", reason, "in", delay, "err", werr)
	q.reschedule(wctx, j, q.e.now().Add(delay), attempts)
	return true
}

func (q *Queue[T]) reschedule(ctx context.Context, j *Job[T], at time.Time, attempts int) {
	raw := j.raw
	raw.NotBefore, raw.Attempts, raw.Rev = at, attempts, newRev()
	if err := q.e.Store.PutJob(ctx, q.Name, raw); err != nil {
		q.log.Warn("reschedule a job; it is tried again as it was", "job_id", j.ID, "err", err)
	}
}

func (q *Queue[T]) drop(ctx context.Context, raw store.Job, reason string, why error) {
	if q.e.Observer.Dropped != nil {
		q.e.Observer.Dropped(q.Name, reason)
	}
	q.log.Error("giving up on a job", "job_id", raw.ID, "reason", reason, "attempts", raw.Attempts, "err", why)
	if _, err := q.e.Store.DeleteJobIf(ctx, q.Name, raw.ID, raw.Rev); err != nil {
		q.log.Warn("remove a dropped job", "job_id", raw.ID, "err", err)
	}
}
