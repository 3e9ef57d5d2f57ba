package guance

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Priority orders callers waiting on a WindowLimiter: higher goes first.
type Priority int

// Priorities. Writes caused by people (replies, buttons) use PriorityHigh so that they
// are not stuck behind background polling, which uses PriorityLow.
const (
	PriorityLow    Priority = -1
	PriorityNormal Priority = 0
	PriorityHigh   Priority = 1
)

// priorityKey is the context key of a Priority.
type priorityKey struct{}

// WithPriority returns a context whose calls wait on the limiter with priority p.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityFrom returns the priority set by WithPriority, PriorityNormal by default.
func PriorityFrom(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok {
		return p
	}
	return PriorityNormal
}

// WindowLimiter is a sliding-window rate limiter: at most n calls of Wait succeed in any
// window of length per. (A token bucket of rate n/per lets a full bucket's burst through
// on top of the steady rate, which Guance's per-minute window would throttle.)
//
// It keeps n slots; a slot taken at t is free again at t+per. Acquire holds the slot
// until the request has been answered, and frees it per after that: the server counts a
// request when it arrives, which is after the grant, so without that a burst at the
// edge of the window could look like more than n to the server when latencies differ.
// The Client uses Acquire.
//
// Waiters are served by priority (see WithPriority), then in arrival order. Penalize
// holds everyone back until a given time. The zero value is not usable; call
// NewWindowLimiter. A WindowLimiter is safe for concurrent use.
type WindowLimiter struct {
	n   int
	per time.Duration

	mu      sync.Mutex
	slots   []slot
	penalty time.Time // no Wait succeeds before this
	waiters []*waiter // by priority (high first), then arrival
	seq     uint64
}

// slot is one of the n uses a window allows.
type slot struct {
	freeAt time.Time // when the slot may be taken again
	held   bool      // taken by Acquire and not yet released
}

// waiter is one blocked Wait call.
type waiter struct {
	prio Priority
	seq  uint64
	wake chan struct{} // capacity 1: "the queue changed, look again"
}

// LimiterStats is a snapshot of a WindowLimiter for a status page.
type LimiterStats struct {
	// Used is the number of slots taken in the current window (requests granted in the
	// last per, or still in flight).
	Used int
	// Limit is n, the most Waits that may succeed in a window.
	Limit int
	// Waiting is the number of Waits blocked now.
	Waiting int
	// PenalizedUntil is the end of the current penalty, zero when there is none.
	PenalizedUntil time.Time
}

// NewWindowLimiter returns a limiter that lets at most n calls through in any window of
// length per. n < 1 is taken as 1 and per <= 0 as one minute.
func NewWindowLimiter(n int, per time.Duration) *WindowLimiter {
	if n < 1 {
		n = 1
	}
	if per <= 0 {
		per = time.Minute
	}
	return &WindowLimiter{n: n, per: per, slots: make([]slot, n)}
}

// Wait blocks until the call may go, then counts it. Among blocked callers the one with
// the highest priority (PriorityFrom(ctx)) goes first, then the earliest. If ctx ends
// first, Wait returns ctx.Err() and counts nothing.
func (l *WindowLimiter) Wait(ctx context.Context) error {
	_, err := l.take(ctx, false)
	return err
}

// Acquire is Wait for a caller that reports when its request is over: the slot stays
// taken until done is called, and for per after that. done may be called more than
// once; only the first call counts. Callers must call done.
func (l *WindowLimiter) Acquire(ctx context.Context) (done func(), err error) {
	i, err := l.take(ctx, true)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(i) }) }, nil
}

// take waits for a free slot and takes it; hold keeps it taken until release.
func (l *WindowLimiter) take(ctx context.Context, hold bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	w := &waiter{prio: PriorityFrom(ctx), wake: make(chan struct{}, 1)}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	l.mu.Lock()
	l.seq++
	w.seq = l.seq
	l.enqueue(w)
	for {
		var fire <-chan time.Time
		if l.waiters[0] == w {
			now := time.Now()
			i, at := l.nextFree()
			if i >= 0 && !at.After(now) {
				if hold {
					l.slots[i].held = true
				} else {
					l.slots[i].freeAt = now.Add(l.per)
				}
				l.dequeue(w)
				l.mu.Unlock()
				return i, nil
			}
			if i >= 0 { // else every slot is held: wait for a release
				if timer == nil {
					timer = time.NewTimer(at.Sub(now))
				} else {
					timer.Reset(at.Sub(now))
				}
				fire = timer.C
			}
		}
		l.mu.Unlock()

		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.dequeue(w)
			l.mu.Unlock()
			return 0, ctx.Err()
		case <-fire:
		case <-w.wake:
		}
		l.mu.Lock()
	}
}

// release frees a held slot per from now.
func (l *WindowLimiter) release(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slots[i] = slot{freeAt: time.Now().Add(l.per)}
	l.wakeHead()
}

// Penalize blocks every Wait until until; an earlier until than the current penalty's
// changes nothing. The Client calls it when Guance throttles.
func (l *WindowLimiter) Penalize(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.penalty) {
		l.penalty = until
		l.wakeHead()
	}
}

// Stats returns a snapshot of the limiter.
func (l *WindowLimiter) Stats() LimiterStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	st := LimiterStats{Limit: l.n, Waiting: len(l.waiters)}
	for _, s := range l.slots {
		if s.held || s.freeAt.After(now) {
			st.Used++
		}
	}
	if l.penalty.After(now) {
		st.PenalizedUntil = l.penalty
	}
	return st
}

// nextFree returns the slot that frees first and when it may be taken (the penalty
// included); i is -1 when every slot is held. l.mu is held.
func (l *WindowLimiter) nextFree() (i int, at time.Time) {
	i = -1
	for j, s := range l.slots {
		if !s.held && (i < 0 || s.freeAt.Before(at)) {
			i, at = j, s.freeAt
		}
	}
	if l.penalty.After(at) {
		at = l.penalty
	}
	return i, at
}

// enqueue adds w behind every waiter of its priority or higher. l.mu is held.
func (l *WindowLimiter) enqueue(w *waiter) {
	i := len(l.waiters)
	for i > 0 && l.waiters[i-1].prio < w.prio {
		i--
	}
	l.waiters = slices.Insert(l.waiters, i, w)
}

// dequeue removes w and, if it was at the head, wakes the new head. l.mu is held.
func (l *WindowLimiter) dequeue(w *waiter) {
	i := slices.Index(l.waiters, w)
	if i < 0 {
		return
	}
	l.waiters = slices.Delete(l.waiters, i, i+1)
	if i == 0 {
		l.wakeHead()
	}
}

// wakeHead tells the first waiter to look again. l.mu is held.
func (l *WindowLimiter) wakeHead() {
	if len(l.waiters) == 0 {
		return
	}
	select {
	case l.waiters[0].wake <- struct{}{}:
	default:
	}
}

// Window returns the length of the limiter's window; the client backs off that long
// when Guance throttles anyway.
func (l *WindowLimiter) Window() time.Duration { return l.per }
