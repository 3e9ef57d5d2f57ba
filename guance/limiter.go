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
// Waiters are served by priority (see WithPriority), then in arrival order. Penalize
// holds everyone back until a given time. The zero value is not usable; call
// NewWindowLimiter. A WindowLimiter is safe for concurrent use.
type WindowLimiter struct {
	n   int
	per time.Duration

	mu      sync.Mutex
	grants  []time.Time // successful Waits within the last per, oldest first
	penalty time.Time   // no Wait succeeds before this
	waiters []*waiter   // by priority (high first), then arrival
	seq     uint64
}

// waiter is one blocked Wait call.
type waiter struct {
	prio Priority
	seq  uint64
	wake chan struct{} // capacity 1: "the queue changed, look again"
}

// LimiterStats is a snapshot of a WindowLimiter for a status page.
type LimiterStats struct {
	// Used is the number of Waits that succeeded in the current window.
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
	return &WindowLimiter{n: n, per: per}
}

// Wait blocks until the call may go, then counts it. Among blocked callers the one with
// the highest priority (PriorityFrom(ctx)) goes first, then the earliest. If ctx ends
// first, Wait returns ctx.Err() and counts nothing.
func (l *WindowLimiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
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
			at := l.nextFree(now)
			if !at.After(now) {
				l.grants = append(l.grants, now)
				l.dequeue(w)
				l.mu.Unlock()
				return nil
			}
			if timer == nil {
				timer = time.NewTimer(at.Sub(now))
			} else {
				timer.Reset(at.Sub(now))
			}
			fire = timer.C
		}
		l.mu.Unlock()

		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.dequeue(w)
			l.mu.Unlock()
			return ctx.Err()
		case <-fire:
		case <-w.wake:
		}
		l.mu.Lock()
	}
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
	l.prune(now)
	st := LimiterStats{Used: len(l.grants), Limit: l.n, Waiting: len(l.waiters)}
	if l.penalty.After(now) {
		st.PenalizedUntil = l.penalty
	}
	return st
}

// nextFree returns the earliest time a Wait may succeed, given the grants so far and the
// penalty. l.mu is held.
func (l *WindowLimiter) nextFree(now time.Time) time.Time {
	l.prune(now)
	at := now
	if len(l.grants) >= l.n {
		at = l.grants[len(l.grants)-l.n].Add(l.per)
	}
	if l.penalty.After(at) {
		at = l.penalty
	}
	return at
}

// prune forgets grants that have left the window ending at now. l.mu is held.
func (l *WindowLimiter) prune(now time.Time) {
	i := 0
	for i < len(l.grants) && !l.grants[i].Add(l.per).After(now) {
		i++
	}
	if i > 0 {
		l.grants = append(l.grants[:0], l.grants[i:]...)
	}
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
