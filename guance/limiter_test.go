package guance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// maxInWindow returns the largest number of times in any window [t, t+per).
func maxInWindow(times []time.Time, per time.Duration) int {
	best := 0
	for i := range times {
		n := 0
		for _, u := range times {
			if !u.Before(times[i]) && u.Before(times[i].Add(per)) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

func TestWindowLimiter_atMostNPerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, per = 5, time.Minute
		l := NewWindowLimiter(n, per)
		start := time.Now()
		var (
			mu     sync.Mutex
			grants []time.Time
			wg     sync.WaitGroup
		)
		// 23 callers: some at once, some arriving over time.
		for i := range 23 {
			wg.Go(func() {
				time.Sleep(time.Duration(i%4) * 17 * time.Second) // fake time in the bubble
				if err := l.Wait(t.Context()); err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				mu.Lock()
				grants = append(grants, time.Now())
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(grants) != 23 {
			t.Fatalf("grants = %d, want 23", len(grants))
		}
		if got := maxInWindow(grants, per); got != n {
			t.Errorf("max grants in a window of %v = %d, want %d", per, got, n)
		}
		// 23 grants at 5 per minute: the last one is in the fifth minute, no later.
		if got, want := time.Since(start), 4*per; got != want {
			t.Errorf("all grants took %v, want %v", got, want)
		}
	})
}

func TestWindowLimiter_slidingNotBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(3, time.Minute)
		// A token bucket would let 3 through now and another 3 spread over the next
		// minute; a window lets the 4th through only a minute after the 1st.
		start := time.Now()
		for range 3 {
			if err := l.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("first 3 waited %v, want 0", got)
		}
		time.Sleep(40 * time.Second)
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != time.Minute {
			t.Errorf("4th granted after %v, want 1m", got)
		}
		if st := l.Stats(); st.Used != 1 || st.Limit != 3 || st.Waiting != 0 {
			t.Errorf("Stats = %+v, want Used 1 (the first 3 left the window) Limit 3", st)
		}
	})
}

func TestWindowLimiter_priority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, time.Minute)
		if err := l.Wait(t.Context()); err != nil { // fill the window
			t.Fatal(err)
		}
		order := make(chan string, 3)
		wait := func(name string, p Priority) {
			if err := l.Wait(WithPriority(t.Context(), p)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			order <- name
		}
		go wait("low", PriorityLow)
		synctest.Wait() // low is queued first
		go wait("normal", PriorityNormal)
		synctest.Wait()
		go wait("high", PriorityHigh)
		synctest.Wait()
		if st := l.Stats(); st.Waiting != 3 {
			t.Fatalf("Waiting = %d, want 3", st.Waiting)
		}
		for _, want := range []string{"high", "normal", "low"} {
			if got := <-order; got != want {
				t.Errorf("served %s, want %s", got, want)
			}
		}
	})
}

func TestWindowLimiter_samePriorityFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, time.Second)
		order := make(chan int, 5)
		for i := range 5 {
			go func() {
				if err := l.Wait(t.Context()); err != nil {
					t.Error(err)
				}
				order <- i
			}()
			synctest.Wait()
		}
		for want := range 5 {
			if got := <-order; got != want {
				t.Errorf("served %d, want %d", got, want)
			}
		}
	})
}

func TestWindowLimiter_penalize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(10, time.Minute)
		start := time.Now()
		l.Penalize(start.Add(45 * time.Second))
		l.Penalize(start.Add(10 * time.Second)) // earlier: no effect
		if st := l.Stats(); !st.PenalizedUntil.Equal(start.Add(45 * time.Second)) {
			t.Errorf("PenalizedUntil = %v, want +45s", st.PenalizedUntil)
		}
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 45*time.Second {
			t.Errorf("Wait returned after %v, want 45s", got)
		}
		if st := l.Stats(); !st.PenalizedUntil.IsZero() {
			t.Errorf("PenalizedUntil = %v after the penalty, want zero", st.PenalizedUntil)
		}
	})
}

func TestWindowLimiter_penalizeWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, 10*time.Second)
		start := time.Now()
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		done := make(chan time.Duration)
		go func() {
			if err := l.Wait(t.Context()); err != nil {
				t.Error(err)
			}
			done <- time.Since(start)
		}()
		synctest.Wait() // the waiter is due at +10s
		l.Penalize(start.Add(time.Minute))
		if got := <-done; got != time.Minute {
			t.Errorf("Wait returned after %v, want 1m (the penalty)", got)
		}
	})
}

func TestWindowLimiter_cancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, time.Minute)
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error)
		go func() { errc <- l.Wait(ctx) }()
		// A second waiter behind the cancelled one must still be served in time.
		start := time.Now()
		served := make(chan time.Duration)
		synctest.Wait()
		go func() {
			if err := l.Wait(t.Context()); err != nil {
				t.Error(err)
			}
			served <- time.Since(start)
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
		if got := <-served; got != time.Minute {
			t.Errorf("next waiter served after %v, want 1m", got)
		}
		if st := l.Stats(); st.Used != 1 || st.Waiting != 0 {
			t.Errorf("Stats = %+v, want Used 1, Waiting 0 (the cancelled Wait counts nothing)", st)
		}

		// An already-done context does not queue or count.
		if err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait(done ctx) = %v, want context.Canceled", err)
		}
		// A deadline.
		dctx, dcancel := context.WithTimeout(t.Context(), time.Second)
		defer dcancel()
		if err := l.Wait(dctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait = %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestNewWindowLimiter_bounds(t *testing.T) {
	l := NewWindowLimiter(0, 0)
	if l.n != 1 || l.per != time.Minute {
		t.Errorf("NewWindowLimiter(0, 0) = n %d per %v, want 1 per minute", l.n, l.per)
	}
	if got := PriorityFrom(t.Context()); got != PriorityNormal {
		t.Errorf("PriorityFrom(plain ctx) = %v, want PriorityNormal", got)
	}
}

func TestWindowLimiter_acquireHoldsUntilDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, 10*time.Second)
		start := time.Now()
		done, err := l.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan time.Duration)
		go func() {
			if err := l.Wait(t.Context()); err != nil {
				t.Error(err)
			}
			got <- time.Since(start)
		}()
		// The request takes 25 s; the slot is free 10 s after it ends, not after it began.
		time.Sleep(25 * time.Second) // fake time: the request's duration
		synctest.Wait()
		if st := l.Stats(); st.Used != 1 || st.Waiting != 1 {
			t.Errorf("Stats during request = %+v, want Used 1, Waiting 1", st)
		}
		done()
		done() // idempotent
		if d := <-got; d != 35*time.Second {
			t.Errorf("next Wait after %v, want 35s", d)
		}
	})
}

func TestWindowLimiter_acquireCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(1, time.Second)
		done, err := l.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		if _, err := l.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire with every slot held = %v, want DeadlineExceeded", err)
		}
	})
}

// grantLog records when calls were granted, by name.
type grantLog struct {
	mu    sync.Mutex
	times map[string][]time.Time
}

func (g *grantLog) add(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.times == nil {
		g.times = make(map[string][]time.Time)
	}
	g.times[name] = append(g.times[name], time.Now())
}

func (g *grantLog) get(name string) []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.times[name])
}

// waitAll starts count callers of l.Wait with priority p and logs their grants under
// name; wg.Wait waits for them.
func waitAll(t *testing.T, wg *sync.WaitGroup, l *WindowLimiter, p Priority, count int, log *grantLog, name string) {
	t.Helper()
	for range count {
		wg.Go(func() {
			if err := l.Wait(WithPriority(t.Context(), p)); err != nil {
				t.Errorf("%s: Wait: %v", name, err)
				return
			}
			log.add(name)
		})
	}
}

func TestWindowLimiter_reserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, k, per = 10, 3, time.Minute
		l := NewWindowLimiter(n, per, WithReserve(k))
		start := time.Now()
		var (
			log grantLog
			wg  sync.WaitGroup
		)
		// 35 background callers: 7 a window, the last in the fifth.
		waitAll(t, &wg, l, PriorityLow, 35, &log, "low")
		synctest.Wait()
		if got := len(log.get("low")); got != n-k {
			t.Errorf("low callers granted in the first window = %d, want %d", got, n-k)
		}
		if st := l.Stats(); st.Used != n-k || st.Reserve != k || st.Waiting != 35-(n-k) {
			t.Errorf("Stats = %+v, want Used %d, Reserve %d, Waiting %d", st, n-k, k, 35-(n-k))
		}

		// A person's write, behind a queue of background callers, goes at once.
		time.Sleep(10 * time.Second)
		if err := l.Wait(WithPriority(t.Context(), PriorityHigh)); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("high caller granted at +%v, want +10s (at once)", got)
		}

		wg.Wait()
		low := log.get("low")
		if got := maxInWindow(low, per); got != n-k {
			t.Errorf("max low grants in a window = %d, want %d", got, n-k)
		}
		// 7 at +0, +1m, +2m, +3m; then 6 at +4m and the last once the high caller's slot
		// of +1m10s has left the window again, at +4m10s.
		if got, want := low[len(low)-1].Sub(start), 4*per+10*time.Second; got != want {
			t.Errorf("last low grant at +%v, want +%v", got, want)
		}
	})
}

func TestWindowLimiter_reserveHighTakesEverySlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(3, time.Minute, WithReserve(2))
		start := time.Now()
		if err := l.Wait(WithPriority(t.Context(), PriorityNormal)); err != nil {
			t.Fatal(err)
		}
		// A Normal caller is now blocked by the reserve, at the head of the queue.
		normal := make(chan time.Duration)
		go func() {
			if err := l.Wait(t.Context()); err != nil {
				t.Error(err)
			}
			normal <- time.Since(start)
		}()
		synctest.Wait()
		for i := range 2 {
			if err := l.Wait(WithPriority(t.Context(), PriorityHigh)); err != nil {
				t.Fatal(err)
			}
			if got := time.Since(start); got != 0 {
				t.Errorf("high caller %d granted at +%v, want at once", i, got)
			}
		}
		if st := l.Stats(); st.Used != 3 || st.HighUsed != 2 || st.Waiting != 1 || st.Granted != 3 || st.HighGranted != 2 {
			t.Errorf("Stats = %+v, want Used 3 (HighUsed 2), Waiting 1, Granted 3 (HighGranted 2)", st)
		}
		// The Normal caller needs all 3 slots free, so that 2 stay free after it.
		if got := <-normal; got != time.Minute {
			t.Errorf("normal caller granted at +%v, want +1m", got)
		}
	})
}

func TestWindowLimiter_reserveWakesLowWhenEnoughFree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(3, time.Minute, WithReserve(1))
		start := time.Now()
		for range 3 {
			if err := l.Wait(WithPriority(t.Context(), PriorityHigh)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Second)
		}
		// Slots free at +60s, +70s and +80s; a Low caller needs two free.
		if err := l.Wait(WithPriority(t.Context(), PriorityLow)); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 70*time.Second {
			t.Errorf("low caller granted at +%v, want +70s (when the second slot frees)", got)
		}
	})
}

func TestWindowLimiter_reservePenalize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(10, time.Minute, WithReserve(3))
		start := time.Now()
		l.Penalize(start.Add(45 * time.Second))
		var wg sync.WaitGroup
		for _, p := range []Priority{PriorityHigh, PriorityLow} {
			wg.Go(func() {
				if err := l.Wait(WithPriority(t.Context(), p)); err != nil {
					t.Error(err)
				}
				if got := time.Since(start); got != 45*time.Second {
					t.Errorf("priority %d granted at +%v, want +45s (the penalty)", p, got)
				}
			})
		}
		wg.Wait()
	})
}

func TestWithReserve_clamped(t *testing.T) {
	for _, tc := range []struct{ n, k, want int }{
		{10, -1, 0}, {10, 0, 0}, {10, 3, 3}, {10, 10, 9}, {10, 50, 9}, {1, 1, 0}, {0, 5, 0},
	} {
		if got := NewWindowLimiter(tc.n, time.Minute, WithReserve(tc.k)).Stats().Reserve; got != tc.want {
			t.Errorf("n %d WithReserve(%d): Reserve = %d, want %d", tc.n, tc.k, got, tc.want)
		}
	}
}

// fakeShared is a SharedWindow in memory: a sliding window of length per that several
// WindowLimiters (replicas) share, as the store does in Redis.
type fakeShared struct {
	per   time.Duration
	delay time.Duration // the round trip to the store

	mu          sync.Mutex
	taken       []time.Time // slots taken in the last per, oldest first
	calls       int
	limits      []int       // the limit of every call
	err         error       // returned by every call when set
	asked       []time.Time // when every call was answered
	inFlight    int
	maxInFlight int
}

func (f *fakeShared) TakeSlot(ctx context.Context, limit int) (time.Duration, error) {
	f.mu.Lock()
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight--
	f.calls++
	f.limits = append(f.limits, limit)
	f.asked = append(f.asked, time.Now())
	if f.err != nil {
		return 0, f.err
	}
	now := time.Now()
	f.taken = slices.DeleteFunc(f.taken, func(t time.Time) bool { return !t.Add(f.per).After(now) })
	if len(f.taken) < limit {
		f.taken = append(f.taken, now)
		return 0, nil
	}
	// Fewer than limit are taken once the oldest len-limit+1 have left the window.
	return f.taken[len(f.taken)-limit].Add(f.per).Sub(now), nil
}

func (f *fakeShared) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeShared) askedAt() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

func (f *fakeShared) stats() (calls int, limits []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, slices.Clone(f.limits)
}

func TestWindowLimiter_sharedTwoReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, per = 10, time.Minute
		shared := &fakeShared{per: per}
		a := NewWindowLimiter(n, per, WithSharedWindow(shared))
		b := NewWindowLimiter(n, per, WithSharedWindow(shared))
		start := time.Now()
		var (
			log grantLog
			wg  sync.WaitGroup
		)
		// 30 callers over two replicas, each of which alone would grant 10 a window.
		waitAll(t, &wg, a, PriorityNormal, 15, &log, "all")
		waitAll(t, &wg, b, PriorityNormal, 15, &log, "all")
		synctest.Wait()
		if got := len(log.get("all")); got != n {
			t.Errorf("granted in the first window = %d, want %d", got, n)
		}
		// The replicas' waiters hold no local slots while the shared window is full.
		if ua, ub := a.Stats().Used, b.Stats().Used; ua+ub != n {
			t.Errorf("local Used = %d + %d, want %d in all", ua, ub, n)
		}
		wg.Wait()
		all := log.get("all")
		if got := maxInWindow(all, per); got != n {
			t.Errorf("max grants in a window over both replicas = %d, want %d", got, n)
		}
		if got, want := all[len(all)-1].Sub(start), 2*per; got != want {
			t.Errorf("last grant at +%v, want +%v", got, want)
		}
		if sa, sb := a.Stats(), b.Stats(); sa.SharedWaits+sb.SharedWaits == 0 || sa.SharedErrors+sb.SharedErrors != 0 {
			t.Errorf("Stats = %+v and %+v, want some SharedWaits and no SharedErrors", sa, sb)
		}
	})
}

func TestWindowLimiter_sharedReserveAndHigh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, k, per = 4, 1, time.Minute
		shared := &fakeShared{per: per}
		a := NewWindowLimiter(n, per, WithReserve(k), WithSharedWindow(shared))
		b := NewWindowLimiter(n, per, WithReserve(k), WithSharedWindow(shared))
		start := time.Now()
		// Replica b's background work takes n-k of the shared window.
		for range n - k {
			if err := b.Wait(WithPriority(t.Context(), PriorityLow)); err != nil {
				t.Fatal(err)
			}
		}
		// Replica a has every local slot free, but its Low caller must wait for the
		// shared window, at the head of a's queue and holding no local slot.
		ctx, cancel := context.WithCancel(t.Context())
		cancelled := make(chan error)
		go func() { cancelled <- a.Wait(WithPriority(ctx, PriorityLow)) }()
		low := make(chan time.Duration)
		go func() {
			if err := a.Wait(WithPriority(t.Context(), PriorityLow)); err != nil {
				t.Error(err)
			}
			low <- time.Since(start)
		}()
		synctest.Wait()
		if st := a.Stats(); st.Used != 0 || st.Waiting != 2 {
			t.Errorf("a.Stats = %+v, want Used 0, Waiting 2", st)
		}
		// A click on replica a takes the reserved slot at once.
		if err := a.Wait(WithPriority(t.Context(), PriorityHigh)); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("high caller granted at +%v, want at once", got)
		}
		cancel()
		if err := <-cancelled; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Wait = %v, want context.Canceled", err)
		}
		// The window is now full for everyone: the next click waits for b's first slot.
		if err := a.Wait(WithPriority(t.Context(), PriorityHigh)); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != per {
			t.Errorf("second high caller granted at +%v, want +%v", got, per)
		}
		// The Low caller needs 2 of the 4 shared slots free, so it goes then too.
		if got := <-low; got != per {
			t.Errorf("low caller granted at +%v, want +%v", got, per)
		}
		_, limits := shared.stats()
		if !slices.Contains(limits, n) || !slices.Contains(limits, n-k) || slices.ContainsFunc(limits, func(l int) bool { return l != n && l != n-k }) {
			t.Errorf("shared limits asked = %v, want only %d (high) and %d (others)", limits, n, n-k)
		}
		if st := a.Stats(); st.Used != 2 || st.Waiting != 0 {
			t.Errorf("a.Stats = %+v, want Used 2 (the first click left the window), Waiting 0", st)
		}
	})
}

func TestWindowLimiter_sharedWaitKeepsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const per = time.Minute
		shared := &fakeShared{per: per, delay: time.Millisecond}
		a := NewWindowLimiter(2, per, WithSharedWindow(shared))
		b := NewWindowLimiter(2, per, WithSharedWindow(shared))
		for range 2 {
			if err := b.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		order := make(chan int, 3)
		for i := range 3 {
			go func() {
				if err := a.Wait(t.Context()); err != nil {
					t.Error(err)
				}
				order <- i
			}()
			synctest.Wait() // turned away by the shared window, then the next arrives
		}
		for want := range 3 {
			if got := <-order; got != want {
				t.Errorf("served %d, want %d", got, want)
			}
		}
		// Only the head asks, so that a later caller's answer cannot overtake it.
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if shared.maxInFlight != 1 {
			t.Errorf("at most %d calls to the shared window at once, want 1", shared.maxInFlight)
		}
	})
}

func TestWindowLimiter_sharedAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const per = 10 * time.Second
		shared := &fakeShared{per: per}
		l := NewWindowLimiter(1, per, WithSharedWindow(shared))
		start := time.Now()
		done, err := l.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Second) // the request
		done()
		// The shared window freed its slot at +10s, the local one frees at +35s.
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 35*time.Second {
			t.Errorf("next Wait at +%v, want +35s", got)
		}
		if calls, _ := shared.stats(); calls != 2 {
			t.Errorf("shared window asked %d times, want 2", calls)
		}
	})
}

// TestWindowLimiter_sharedDownGrantsNothing: while the shared window fails, the limiter
// grants nothing although every local slot is free, asks again after 250 ms doubling to
// 2 s, and the caller gets only its context's error.
func TestWindowLimiter_sharedDownGrantsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shared := &fakeShared{per: time.Minute, err: errors.New("redis down")}
		l := NewWindowLimiter(3, time.Minute, WithSharedWindow(shared))
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait while the shared window fails = %v, want context.DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("Wait returned after %v, want 10s (its deadline)", got)
		}
		var asked []time.Duration
		for _, at := range shared.askedAt() {
			asked = append(asked, at.Sub(start))
		}
		want := []time.Duration{0, 250 * time.Millisecond, 750 * time.Millisecond, 1750 * time.Millisecond,
			3750 * time.Millisecond, 5750 * time.Millisecond, 7750 * time.Millisecond, 9750 * time.Millisecond}
		if !slices.Equal(asked, want) {
			t.Errorf("shared window asked at %v, want %v (250 ms doubling to 2 s)", asked, want)
		}
		if st := l.Stats(); st.Used != 0 || st.Granted != 0 || st.Waiting != 0 || st.SharedErrors != len(want) {
			t.Errorf("Stats = %+v, want nothing used or granted, Waiting 0, SharedErrors %d", st, len(want))
		}
	})
}

// TestWindowLimiter_sharedDownResumes: callers that came while the shared window failed
// keep their places; once it answers again they are granted in order, within the 2 s of
// the backoff, and only as the shared window allows.
func TestWindowLimiter_sharedDownResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, per = 3, time.Minute
		shared := &fakeShared{per: per, delay: time.Millisecond, err: errors.New("redis down")}
		l := NewWindowLimiter(n, per, WithSharedWindow(shared))
		type grant struct {
			i   int
			at  time.Time
			err error
		}
		granted := make(chan grant, 5)
		for i := range 5 {
			go func() {
				err := l.Wait(t.Context())
				granted <- grant{i, time.Now(), err}
			}()
			synctest.Wait()
		}
		// The store stays down for 30 s: nothing is granted meanwhile.
		select {
		case g := <-granted:
			t.Fatalf("caller %d answered (err %v) while the shared window fails, want it to wait", g.i, g.err)
		case <-time.After(30 * time.Second):
		}
		st := l.Stats()
		if st.Used != 0 || st.Granted != 0 || st.Waiting != 5 || st.SharedErrors == 0 {
			t.Fatalf("Stats while the store is down = %+v, want nothing used or granted, Waiting 5, some SharedErrors", st)
		}
		errs := st.SharedErrors
		shared.setErr(nil)
		back := time.Now()
		var times []time.Time
		for want := range 5 {
			g := <-granted
			if g.err != nil {
				t.Fatalf("Wait %d: %v", g.i, g.err)
			}
			if g.i != want {
				t.Errorf("served %d, want %d", g.i, want)
			}
			times = append(times, g.at)
		}
		// n as soon as the shared window is asked again, the rest a window later.
		for i, at := range times {
			if got := at.Sub(back); i < n && got > sharedRetryMax+n*shared.delay {
				t.Errorf("grant %d %v after the store came back, want at most %v", i, got, sharedRetryMax)
			}
			if got := at.Sub(times[0]); i >= n && (got < per || got > per+time.Second) {
				t.Errorf("grant %d %v after the first, want one window (%v) later", i, got, per)
			}
		}
		if got := maxInWindow(times, per); got != n {
			t.Errorf("max grants in a window = %d, want %d", got, n)
		}
		if st := l.Stats(); st.SharedErrors != errs || st.Waiting != 0 {
			t.Errorf("Stats after recovery = %+v, want SharedErrors still %d, Waiting 0", st, errs)
		}
	})
}

// TestWindowLimiter_sharedDownPriority: callers that queued while the shared window
// failed are served by priority once it is back, a click that came last first.
func TestWindowLimiter_sharedDownPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, k = 10, 2
		shared := &fakeShared{per: time.Minute, delay: time.Millisecond, err: errors.New("redis down")}
		l := NewWindowLimiter(n, time.Minute, WithReserve(k), WithSharedWindow(shared))
		order, errs := make(chan string, 3), make(chan error, 3)
		wait := func(name string, p Priority) {
			if err := l.Wait(WithPriority(t.Context(), p)); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				return
			}
			order <- name
		}
		go wait("low", PriorityLow)
		synctest.Wait()
		go wait("normal", PriorityNormal)
		synctest.Wait()
		go wait("high", PriorityHigh)
		synctest.Wait()
		select {
		case name := <-order:
			t.Fatalf("%s granted while the shared window fails", name)
		case err := <-errs:
			t.Fatalf("Wait while the shared window fails: %v", err)
		case <-time.After(10 * time.Second):
		}
		if st := l.Stats(); st.Waiting != 3 || st.Used != 0 {
			t.Fatalf("Stats while the store is down = %+v, want Waiting 3, Used 0", st)
		}
		shared.setErr(nil)
		for _, want := range []string{"high", "normal", "low"} {
			select {
			case got := <-order:
				if got != want {
					t.Errorf("served %s, want %s", got, want)
				}
			case err := <-errs:
				t.Fatal(err)
			}
		}
		// The reserve still holds across replicas: only the click may take every slot.
		_, limits := shared.stats()
		if got := limits[len(limits)-3:]; !slices.Equal(got, []int{n, n - k, n - k}) {
			t.Errorf("limits of the granting calls = %v, want [%d %d %d]", got, n, n-k, n-k)
		}
	})
}

// TestWindowLimiter_sharedDownCancel: a caller waiting while the shared window fails
// gets its context's error, and leaves nothing taken behind.
func TestWindowLimiter_sharedDownCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shared := &fakeShared{per: time.Minute, err: errors.New("redis down")}
		l := NewWindowLimiter(3, time.Minute, WithSharedWindow(shared))
		ctx, cancel := context.WithCancel(t.Context())
		waitErr, acquireErr := make(chan error, 1), make(chan error, 1)
		go func() { waitErr <- l.Wait(ctx) }()
		go func() {
			done, err := l.Acquire(WithPriority(ctx, PriorityHigh))
			if err == nil {
				done()
			}
			acquireErr <- err
		}()
		select {
		case err := <-waitErr:
			t.Fatalf("Wait returned %v while the shared window fails, want it to wait", err)
		case err := <-acquireErr:
			t.Fatalf("Acquire returned %v while the shared window fails, want it to wait", err)
		case <-time.After(5 * time.Second):
		}
		cancel()
		if err := <-waitErr; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
		if err := <-acquireErr; !errors.Is(err, context.Canceled) {
			t.Errorf("Acquire = %v, want context.Canceled", err)
		}
		if st := l.Stats(); st.Used != 0 || st.Granted != 0 || st.Waiting != 0 {
			t.Errorf("Stats = %+v, want nothing used, granted or waiting", st)
		}
	})
}

// stuckShared is a SharedWindow whose store never answers.
type stuckShared struct{}

func (stuckShared) TakeSlot(ctx context.Context, limit int) (time.Duration, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestWindowLimiter_sharedStuckGrantsNothing: a call to the shared window that takes
// more than sharedTimeout counts as failed, so a stuck store grants nothing either, and a
// caller can leave while a call is under way.
func TestWindowLimiter_sharedStuckGrantsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(3, time.Minute, WithSharedWindow(stuckShared{}))
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on a stuck store = %v, want context.DeadlineExceeded", err)
		}
		// Asked at +0 and +2.25 s (each call given up after 2 s), then at +4.75 s until
		// the deadline, which is the caller's end, not the store's failure.
		if st := l.Stats(); st.SharedErrors != 2 || st.Used != 0 || st.Granted != 0 {
			t.Errorf("Stats = %+v, want SharedErrors 2, nothing used or granted", st)
		}

		ctx, cancel = context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- l.Wait(ctx) }()
		synctest.Wait() // asking the stuck store
		if st := l.Stats(); st.Waiting != 1 {
			t.Errorf("Waiting = %d while asking, want 1", st.Waiting)
		}
		start := time.Now()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("Wait returned %v after the cancel, want at once", got)
		}
	})
}

// brokenLink is one replica's way to a shared window, which the test can cut.
type brokenLink struct {
	w SharedWindow

	mu  sync.Mutex
	cut bool
}

func (b *brokenLink) TakeSlot(ctx context.Context, limit int) (time.Duration, error) {
	b.mu.Lock()
	cut := b.cut
	b.mu.Unlock()
	if cut {
		return 0, errors.New("dial tcp: connection refused")
	}
	return b.w.TakeSlot(ctx, limit)
}

func (b *brokenLink) setCut(cut bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cut = cut
}

// TestWindowLimiter_sharedDownTwoReplicas: a replica that cannot reach the shared window
// spends none of it, so two replicas stay within one window between them also while one
// of them is cut off (counting on its own, it would spend a window of its own).
func TestWindowLimiter_sharedDownTwoReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, per = 5, time.Minute
		shared := &fakeShared{per: per}
		link := &brokenLink{w: shared, cut: true}
		a := NewWindowLimiter(n, per, WithSharedWindow(link))
		b := NewWindowLimiter(n, per, WithSharedWindow(shared))
		start := time.Now()
		var (
			log grantLog
			wg  sync.WaitGroup
		)
		waitAll(t, &wg, a, PriorityNormal, 10, &log, "all")
		waitAll(t, &wg, b, PriorityNormal, 10, &log, "all")
		<-time.After(30 * time.Second) // a is cut off for 30 s
		if got := len(log.get("all")); got != n {
			t.Errorf("granted while a is cut off = %d, want %d (b's window)", got, n)
		}
		if st := a.Stats(); st.Granted != 0 || st.Waiting != 10 || st.SharedErrors == 0 {
			t.Errorf("a.Stats = %+v, want nothing granted, Waiting 10, some SharedErrors", st)
		}
		link.setCut(false)
		wg.Wait()
		all := log.get("all")
		if got := maxInWindow(all, per); got != n {
			t.Errorf("max grants in a window over both replicas = %d, want %d", got, n)
		}
		if got, want := all[len(all)-1].Sub(start), 3*per; got != want {
			t.Errorf("last grant at +%v, want +%v (20 at %d a window)", got, want, n)
		}
	})
}

// TestWindowLimiter_highUsed: Stats counts the slots PriorityHigh callers took in the
// window, so that background work can leave people's writes room.
func TestWindowLimiter_highUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindowLimiter(10, time.Minute, WithReserve(2))
		high := WithPriority(t.Context(), PriorityHigh)
		low := WithPriority(t.Context(), PriorityLow)
		for _, ctx := range []context.Context{high, high, low, high} {
			if err := l.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		done, err := l.Acquire(high)
		if err != nil {
			t.Fatal(err)
		}
		done()
		if st := l.Stats(); st.Used != 5 || st.HighUsed != 4 {
			t.Errorf("Stats = %+v, want Used 5, HighUsed 4", st)
		}
		time.Sleep(time.Minute + time.Second)
		if st := l.Stats(); st.Used != 0 || st.HighUsed != 0 {
			t.Errorf("after the window: Stats = %+v, want none used", st)
		}
	})
}
