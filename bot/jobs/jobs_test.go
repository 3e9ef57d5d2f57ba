package jobs

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/store"
)

type payload struct {
	Key  string `json:"key"`
	Name string `json:"name"`
}

// rig is an engine over a real embedded store, leading in term 2.
type rig struct {
	st      *store.Embedded
	e       *Engine
	term    atomic.Int64
	mu      sync.Mutex
	dropped []string
	retried []string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	r := &rig{st: st}
	r.term.Store(2)
	r.e = &Engine{
		Store: st, Lease: "poller", Term: r.term.Load, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Classify: func(context.Context, error, int) (time.Duration, string) { return 20 * time.Millisecond, "transient" },
		Observer: Observer{
			Dropped: func(q, reason string) { r.mu.Lock(); r.dropped = append(r.dropped, reason); r.mu.Unlock() },
			Retried: func(q, reason string) { r.mu.Lock(); r.retried = append(r.retried, reason); r.mu.Unlock() },
		},
	}
	return r
}

// run runs q until the test ends.
func run[T any](t *testing.T, q *Queue[T]) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func count(t *testing.T, st *store.Embedded, queue string) int {
	t.Helper()
	n, err := st.CountJobs(t.Context(), queue)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKeyOrderSurvivesAFailure: the jobs of one key run in order even when the first
// fails; another key is not held up by it.
func TestKeyOrderSurvivesAFailure(t *testing.T) {
	r := newRig(t)
	var mu sync.Mutex
	var order []string
	failed := false
	q := NewQueue(r.e, "replies", func(ctx context.Context, j *Job[payload]) error {
		mu.Lock()
		defer mu.Unlock()
		if j.Payload.Name == "a1" && !failed {
			failed = true
			return errors.New("guance 503")
		}
		order = append(order, j.Payload.Name)
		return nil
	})
	q.Key = func(p payload) string { return p.Key }
	q.Parallel = 2
	ctx := t.Context()
	for i, p := range []payload{{"a", "a1"}, {"a", "a2"}, {"b", "b1"}} {
		if err := q.Enqueue(ctx, p.Name, p, time.Time{}); err != nil {
			t.Fatal(err)
		}
		_ = i
	}
	run(t, q)
	waitFor(t, "every job done", func() bool { return count(t, r.st, "replies") == 0 })
	mu.Lock()
	defer mu.Unlock()
	ia, ia2 := slices.Index(order, "a1"), slices.Index(order, "a2")
	if ia < 0 || ia2 < 0 || ia > ia2 || !slices.Contains(order, "b1") {
		t.Errorf("order = %v, want a1 before a2 (b1 anywhere)", order)
	}
	if !slices.Equal(r.retried, []string{"transient"}) {
		t.Errorf("retried = %v, want one transient retry", r.retried)
	}
}

// TestRequeuedWhileWorkedOnStays: a job queued again while its previous version is
// being worked on is not removed with it (a change made during a card patch is patched).
func TestRequeuedWhileWorkedOnStays(t *testing.T) {
	r := newRig(t)
	var runs atomic.Int32
	var q *Queue[payload]
	q = NewQueue(r.e, "patches", func(ctx context.Context, j *Job[payload]) error {
		if runs.Add(1) == 1 {
			if err := q.Enqueue(ctx, j.ID, payload{Name: "newer"}, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err := q.Enqueue(t.Context(), "issue_1", payload{Name: "first"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	run(t, q)
	waitFor(t, "the re-queued job run too", func() bool { return runs.Load() == 2 && count(t, r.st, "patches") == 0 })
}

// TestOutcomes: Later does not count an attempt, Drop removes and counts, a plain error
// counts an attempt and waits the classified delay, ErrAbandon leaves the job alone.
func TestOutcomes(t *testing.T) {
	r := newRig(t)
	r.e.Classify = func(context.Context, error, int) (time.Duration, string) { return time.Hour, "refused" }
	q := NewQueue(r.e, "q", func(ctx context.Context, j *Job[payload]) error {
		switch j.Payload.Name {
		case "later":
			return Later(time.Hour, errors.New("waiting for a scan"))
		case "drop":
			return Drop("too old", errors.New("bot removed from the chat"))
		case "fail":
			return errors.New("card refused")
		case "abandon":
			return ErrAbandon
		}
		return nil
	})
	for _, n := range []string{"later", "drop", "fail", "abandon"} {
		if err := q.Enqueue(t.Context(), n, payload{Name: n}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, q)
	jobs := func() map[string]store.Job {
		all, err := r.st.DueJobs(t.Context(), "q", farFuture, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]store.Job{}
		for _, j := range all {
			m[j.ID] = j
		}
		return m
	}
	waitFor(t, "outcomes applied", func() bool {
		m := jobs()
		_, dropped := m["drop"]
		return !dropped && m["later"].NotBefore.After(time.Now().Add(30*time.Minute)) && m["fail"].Attempts == 1
	})
	m := jobs()
	if m["later"].Attempts != 0 {
		t.Errorf("Later counted an attempt: %d", m["later"].Attempts)
	}
	if !m["fail"].NotBefore.After(time.Now().Add(30 * time.Minute)) {
		t.Errorf("a failure waits %v, want the classified hour", time.Until(m["fail"].NotBefore))
	}
	if a := m["abandon"]; a.Attempts != 0 || a.NotBefore.After(time.Now()) {
		t.Errorf("an abandoned job was changed: %+v", a)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(r.dropped, []string{"too old"}) {
		t.Errorf("dropped = %v, want [too old]", r.dropped)
	}
}

// TestClaimsFollowTheTerm: a claim of an older term does not hold a job; one of the
// current term does; a process that does not lead starts nothing.
func TestClaimsFollowTheTerm(t *testing.T) {
	r := newRig(t)
	var runs atomic.Int32
	q := NewQueue(r.e, "cards", func(context.Context, *Job[payload]) error { runs.Add(1); return nil })
	ctx := t.Context()
	if ok, err := r.st.ClaimWork(ctx, "poller", "cards:old", 1, time.Hour); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, err := r.st.ClaimWork(ctx, "poller", "cards:held", 2, time.Hour); err != nil || !ok {
		t.Fatal(ok, err)
	}
	for _, id := range []string{"old", "held"} {
		if err := q.Enqueue(ctx, id, payload{Name: id}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, q)
	waitFor(t, "the dead leader's job done", func() bool { return count(t, r.st, "cards") == 1 })
	if n := runs.Load(); n != 1 {
		t.Errorf("%d runs, want exactly one: the job claimed in this term is held, the done one not run again", n)
	}

	r2 := newRig(t)
	r2.term.Store(0)
	var ran atomic.Bool
	q2 := NewQueue(r2.e, "cards", func(context.Context, *Job[payload]) error { ran.Store(true); return nil })
	if err := q2.Enqueue(ctx, "x", payload{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	run(t, q2)
	q2.Wake()
	time.Sleep(50 * time.Millisecond) // nothing may happen; there is no condition to wait for
	if ran.Load() {
		t.Error("a job ran while the process did not lead")
	}
}

// TestUnreadableJobIsDropped: a payload that does not decode is dropped and counted.
func TestUnreadableJobIsDropped(t *testing.T) {
	r := newRig(t)
	if err := r.st.PutJob(t.Context(), "q", store.Job{ID: "bad", Payload: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	q := NewQueue(r.e, "q", func(context.Context, *Job[payload]) error { return nil })
	run(t, q)
	waitFor(t, "the unreadable job dropped", func() bool { return count(t, r.st, "q") == 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(r.dropped, []string{"unreadable"}) {
		t.Errorf("dropped = %v, want [unreadable]", r.dropped)
	}
}

// TestEachJobRunsOnce: with several keys in flight, no job is started again from a read
// made before it was removed.
func TestEachJobRunsOnce(t *testing.T) {
	r := newRig(t)
	var mu sync.Mutex
	runs := map[string]int{}
	q := NewQueue(r.e, "q", func(_ context.Context, j *Job[payload]) error {
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		return nil
	})
	q.Parallel = 4
	for i := range 60 {
		id := string(rune('A'+i%26)) + string(rune('a'+i/26))
		if err := q.Enqueue(t.Context(), id, payload{Name: id}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, q)
	waitFor(t, "every job done", func() bool { return count(t, r.st, "q") == 0 })
	mu.Lock()
	defer mu.Unlock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %s ran %d times, want 1", id, n)
		}
	}
	if len(runs) != 60 {
		t.Errorf("%d jobs ran, want 60", len(runs))
	}
}
