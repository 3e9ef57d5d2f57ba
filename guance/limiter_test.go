package guance

import (
	"context"
	"errors"
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
