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
// holds everyone back until a given time. WithReserve keeps some slots of every window
// for PriorityHigh callers, and WithSharedWindow makes several limiters (one per
// replica) share one window. The zero value is not usable; call NewWindowLimiter. A
// WindowLimiter is safe for concurrent use.
type WindowLimiter struct {
	n       int
	per     time.Duration
	reserve int          // slots of a window only PriorityHigh may take, in [0, n-1]
	shared  SharedWindow // nil: local limiting only

	mu          sync.Mutex
	slots       []slot
	penalty     time.Time // no Wait succeeds before this
	waiters     []*waiter // by priority (high first), then arrival
	seq         uint64
	asking      bool          // a waiter, out of the queue, is asking the shared window
	sharedDown  time.Time     // after an error, nobody asks the shared window (nor is granted) before this
	sharedRetry time.Duration // the last wait after an error; doubles up to sharedRetryMax, 0 after an answer
	sharedErrs  int
	sharedWaits int
	granted     uint64
	highGranted uint64
}

// slot is one of the n uses a window allows.
type slot struct {
	freeAt time.Time // when the slot may be taken again
	high   bool      // taken by a PriorityHigh caller (see LimiterStats.HighUsed)
	held   bool      // taken by Acquire and not yet released, or while asking the shared window
}

// waiter is one blocked Wait call.
type waiter struct {
	prio    Priority
	seq     uint64
	wake    chan struct{} // capacity 1: "the queue changed, look again"
	retryAt time.Time     // the shared window said to wait until then
}

// LimiterStats is a snapshot of a WindowLimiter for a status page.
type LimiterStats struct {
	// Used is the number of slots taken in the current window (requests granted in the
	// last per, or still in flight), and HighUsed how many of them PriorityHigh callers
	// took: a scheduler of background work can leave them room.
	Used, HighUsed int
	// Granted counts every call granted since the limiter was made, and HighGranted
	// those granted to PriorityHigh callers: a scheduler of background work can tell its
	// own requests from people's.
	Granted, HighGranted uint64
	// Limit is n, the most Waits that may succeed in a window.
	Limit int
	// Reserve is the number of slots of a window that only PriorityHigh callers may take
	// (see WithReserve).
	Reserve int
	// Waiting is the number of Waits blocked now, including those asking the shared
	// window.
	Waiting int
	// PenalizedUntil is the end of the current penalty, zero when there is none.
	PenalizedUntil time.Time
	// SharedWaits counts the times the shared window (see WithSharedWindow) made a
	// caller wait although a local slot was free: other replicas had used the window.
	SharedWaits int
	// SharedErrors counts the failed calls to the shared window. The limiter fails
	// closed: while the calls fail it grants nothing (the waiters keep their places and
	// are counted in Waiting) and asks again after a short backoff.
	SharedErrors int
}

// SharedWindow is a sliding window kept outside the process (in Redis, say) and shared
// by the limiters of several replicas that use one API key; see WithSharedWindow.
//
// TakeSlot takes a slot if fewer than limit slots were taken in the last window (of the
// same length as the limiter's), and returns wait 0. Otherwise it takes nothing and
// returns how long until fewer than limit are taken (wait > 0). Counting and taking must
// be one atomic step, so that replicas never take more than limit between them. The
// limiter passes n for PriorityHigh callers and n minus its reserve for the others, so
// the reserve holds across replicas without the store knowing about priorities; the
// store needs no other state than the times of the slots taken in the last window.
//
// An error means the window could not be asked (the store is down or slow). The limiter
// then grants nothing, since a replica counting on its own would spend the budget the
// others count on; it asks again after a backoff of 250 ms doubling to 2 s. An error
// after the store took the slot only wastes that slot.
type SharedWindow interface {
	TakeSlot(ctx context.Context, limit int) (wait time.Duration, err error)
}

// LimiterOption configures a WindowLimiter in NewWindowLimiter.
type LimiterOption func(*WindowLimiter)

// WithReserve keeps k slots of every window for PriorityHigh callers: a caller of lower
// priority is not granted a slot when that would leave fewer than k free in the window,
// while PriorityHigh callers may take every slot. So background work spends at most
// n-k per window, and a write caused by a person usually finds a slot free at once. k
// is clamped to [0, n-1]; the default is 0.
func WithReserve(k int) LimiterOption {
	return func(l *WindowLimiter) { l.reserve = k }
}

// WithSharedWindow makes the limiter grant a call only when s grants it too, so that
// the limiters of all replicas sharing s stay within one window between them. The local
// rules (priority, reserve, penalty) still apply first, and only the head of the queue
// asks s, so callers are served in order. A caller turned away by s keeps its place in
// the queue, holds no local slot meanwhile, and asks s again when s says a slot frees
// (but at least once per window). s should count slots over the limiter's window length.
//
// The limiter fails closed: when s fails, or takes more than two seconds, nothing is
// granted until s answers again, so replicas never spend more than the shared window
// allows between them, also while the store restarts. The callers wait as they would
// for a full window (in order, holding no slot, Wait returning only ctx's error), and
// the head of the queue asks s again after 250 ms, doubling to at most 2 s; see
// LimiterStats.SharedErrors. So a limiter whose store is down makes no call at all until
// the store is back, also when it is the only replica: s should be a store the caller
// needs anyway.
func WithSharedWindow(s SharedWindow) LimiterOption {
	return func(l *WindowLimiter) { l.shared = s }
}

// NewWindowLimiter returns a limiter that lets at most n calls through in any window of
// length per. n < 1 is taken as 1 and per <= 0 as one minute.
func NewWindowLimiter(n int, per time.Duration, opts ...LimiterOption) *WindowLimiter {
	if n < 1 {
		n = 1
	}
	if per <= 0 {
		per = time.Minute
	}
	l := &WindowLimiter{n: n, per: per, slots: make([]slot, n)}
	for _, opt := range opts {
		opt(l)
	}
	l.reserve = min(max(l.reserve, 0), n-1)
	return l
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
		if l.waiters[0] == w && !l.asking { // one asks the shared window at a time, in order
			now := time.Now()
			i, at := l.nextFree(w.prio)
			if i >= 0 {
				at = latest(at, w.retryAt, l.sharedDown)
			}
			if i >= 0 && !at.After(now) {
				l.dequeue(w)
				if l.shared == nil {
					l.grant(i, hold, now, w.prio >= PriorityHigh)
					l.mu.Unlock()
					return i, nil
				}
				granted, err := l.askShared(ctx, w, i, hold) // unlocks while asking
				if granted || err != nil {
					l.mu.Unlock()
					return i, err
				}
				continue // turned away, or the shared window failed: w is back in the queue
			}
			if i >= 0 { // else too few slots are free, even later: wait for a release
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

// sharedTimeout bounds one call to the shared window; a call that takes longer counts
// as a failure. The queue waits for the call, so a stuck store must not hold it long.
const sharedTimeout = 2 * time.Second

// After a failed call to the shared window the limiter waits sharedRetryMin before it
// asks again, twice as long after each further failure, at most sharedRetryMax: the
// queue resumes soon after the store is back, without hammering a store that is down.
const (
	sharedRetryMin = 250 * time.Millisecond
	sharedRetryMax = 2 * time.Second
)

// askShared asks the shared window for a slot on behalf of w, which has left the queue
// and may take local slot i. Slot i is held meanwhile, so that nobody else takes it;
// l.mu is released during the call, and nobody else asks until it returns. When the
// shared window grants, so does askShared. When it says wait, or fails, slot i is given
// back and w goes back to its place in the queue, to ask again when the window says or
// after the backoff (l.sharedDown); askShared returns false and no error. It returns
// ctx's error if ctx ends during the call. l.mu is held.
func (l *WindowLimiter) askShared(ctx context.Context, w *waiter, i int, hold bool) (granted bool, err error) {
	prev := l.slots[i]
	l.slots[i].held = true
	l.asking = true
	limit := l.n
	if w.prio < PriorityHigh {
		limit -= l.reserve
	}
	l.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, sharedTimeout)
	wait, err := l.shared.TakeSlot(actx, limit)
	cancel()
	l.mu.Lock()
	l.asking = false
	defer l.wakeHead() // the next waiter may ask, and slot i may be free again

	now := time.Now()
	switch {
	case err != nil && ctx.Err() != nil:
		l.slots[i] = prev
		return false, ctx.Err()
	case err != nil:
		// Fail closed: granting on the local count alone could spend slots the other
		// replicas count on. Nobody is granted until the shared window answers again.
		l.sharedErrs++
		l.sharedRetry = min(max(2*l.sharedRetry, sharedRetryMin), sharedRetryMax)
		l.sharedDown = now.Add(l.sharedRetry)
		l.slots[i] = prev
		l.enqueue(w)
		return false, nil
	case wait <= 0:
		l.sharedRetry = 0
		l.grant(i, hold, now, w.prio >= PriorityHigh)
		return true, nil
	}
	l.sharedRetry = 0
	l.sharedWaits++
	l.slots[i] = prev
	w.retryAt = now.Add(min(max(wait, time.Millisecond), l.per))
	l.enqueue(w)
	return false, nil
}

// latest returns the latest of the times.
func latest(t time.Time, more ...time.Time) time.Time {
	for _, u := range more {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// grant takes slot i for a call granted at now; high says the caller was PriorityHigh.
// l.mu is held.
func (l *WindowLimiter) grant(i int, hold bool, now time.Time, high bool) {
	l.granted++
	if high {
		l.highGranted++
	}
	if hold {
		l.slots[i].held, l.slots[i].high = true, high
	} else {
		l.slots[i] = slot{freeAt: now.Add(l.per), high: high}
	}
}

// release frees a held slot per from now.
func (l *WindowLimiter) release(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slots[i] = slot{freeAt: time.Now().Add(l.per), high: l.slots[i].high}
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
	st := LimiterStats{
		Limit:        l.n,
		Reserve:      l.reserve,
		Waiting:      len(l.waiters),
		SharedWaits:  l.sharedWaits,
		SharedErrors: l.sharedErrs,
		Granted:      l.granted,
		HighGranted:  l.highGranted,
	}
	for _, s := range l.slots {
		if s.held || s.freeAt.After(now) {
			st.Used++
			if s.high {
				st.HighUsed++
			}
		}
	}
	if l.asking {
		st.Waiting++
	}
	if l.penalty.After(now) {
		st.PenalizedUntil = l.penalty
	}
	return st
}

// nextFree returns the slot a caller of priority p would take, and when it may take it:
// the penalty included, and for a caller below PriorityHigh, once reserve+1 slots are
// free, so that reserve slots stay free after it. i is -1 when fewer slots than the
// caller needs are not held, so that only a release can help. l.mu is held.
func (l *WindowLimiter) nextFree(p Priority) (i int, at time.Time) {
	need := 1
	if p < PriorityHigh {
		need += l.reserve
	}
	free := make([]int, 0, len(l.slots)) // slots not held, the earliest free first
	for j, s := range l.slots {
		if !s.held {
			free = append(free, j)
		}
	}
	if len(free) < need {
		return -1, time.Time{}
	}
	slices.SortFunc(free, func(a, b int) int { return l.slots[a].freeAt.Compare(l.slots[b].freeAt) })
	i, at = free[0], l.slots[free[need-1]].freeAt
	if l.penalty.After(at) {
		at = l.penalty
	}
	return i, at
}

// enqueue adds w behind every waiter of higher priority, and behind those of its
// priority that came earlier; a waiter the shared window turned away so gets its place
// back. l.mu is held.
func (l *WindowLimiter) enqueue(w *waiter) {
	i := len(l.waiters)
	for i > 0 && (l.waiters[i-1].prio < w.prio || l.waiters[i-1].prio == w.prio && l.waiters[i-1].seq > w.seq) {
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
