package bot

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"issuebot/guance"
	"issuebot/store"
)

func TestTurnOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const every = 2 * time.Second
	for _, tt := range []struct {
		name                string
		lastPoll, lastWatch time.Duration // before t0; 0 = never
		hint                time.Duration // a webhook asked for a poll, before t0; 0 = never
		passed              bool          // a hinted issue waits and the last turn went elsewhere
		want                []turn
	}{
		{"first turn polls", 0, 0, 0, false, []turn{turnPoll, turnWatch}},
		{"poll not due: only the watcher", time.Second, 10 * time.Second, 0, false, []turn{turnWatch}},
		{"both due, the watcher waited longer", 3 * time.Second, 5 * time.Second, 0, false, []turn{turnWatch, turnPoll}},
		{"both due, the poll waited longer", 6 * time.Second, 3 * time.Second, 0, false, []turn{turnPoll, turnWatch}},
		{"a passed-over hint goes before a poll that waited longer", 6 * time.Second, 3 * time.Second, 0, true, []turn{turnWatch, turnPoll}},
		{"the watcher never ran", 3 * time.Second, 0, 0, false, []turn{turnWatch, turnPoll}},
		{"a hint since the last poll makes it due", time.Second, 10 * time.Second, 500 * time.Millisecond, false, []turn{turnWatch, turnPoll}},
		{"a hinted poll after a watcher turn goes first", 1500 * time.Millisecond, time.Second, 500 * time.Millisecond, false, []turn{turnPoll, turnWatch}},
		{"a passed-over hint goes before a hinted poll", 1500 * time.Millisecond, time.Second, 500 * time.Millisecond, true, []turn{turnWatch, turnPoll}},
		{"a hint before the last poll does not", time.Second, 10 * time.Second, 2 * time.Second, false, []turn{turnWatch}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s turns
			if tt.lastPoll > 0 {
				s.lastPoll = t0.Add(-tt.lastPoll)
			}
			if tt.lastWatch > 0 {
				s.lastWatch = t0.Add(-tt.lastWatch)
			}
			var hint time.Time
			if tt.hint > 0 {
				hint = t0.Add(-tt.hint)
			}
			if got := s.order(t0, every, hint, tt.passed); !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTurnsShareTheBudget plays the scheduler's decisions over ten minutes of turns: with
// both always hungry they alternate; with the watcher idle the poll takes every turn
// POLL_INTERVAL allows.
func TestTurnsShareTheBudget(t *testing.T) {
	const turnEvery, pollInterval = 3750 * time.Millisecond, 2 * time.Second
	play := func(watchHungry bool) (polls, watches int) {
		var s turns
		now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		for range 160 {
			for _, tn := range s.order(now, pollInterval, time.Time{}, false) {
				if tn == turnWatch && !watchHungry {
					continue
				}
				if tn == turnPoll {
					s.lastPoll, polls = now, polls+1
				} else {
					s.lastWatch, watches = now, watches+1
				}
				break
			}
			now = now.Add(turnEvery)
		}
		return polls, watches
	}
	if p, w := play(true); p != 80 || w != 80 {
		t.Errorf("both hungry: %d polls, %d watcher turns, want 80 each", p, w)
	}
	if p, w := play(false); p != 160 || w != 0 {
		t.Errorf("watcher idle: %d polls, %d watcher turns, want every turn to poll", p, w)
	}
}

// TestPollSlowsWhileHooksCome: while Guance's webhook is active (a hint within the last
// window) new issues are polled for every half window, leaving the turns to the
// replies the hooks point at; without hooks, at POLL_INTERVAL.
func TestPollSlowsWhileHooksCome(t *testing.T) {
	b := New(Config{PollInterval: 10 * time.Second, BudgetWindow: time.Minute}, nil, nil, nil, nil, nil)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if got := b.pollInterval(now); got != 10*time.Second {
		t.Errorf("without hooks: %v, want POLL_INTERVAL", got)
	}
	b.watch.lastHint = now.Add(-20 * time.Second)
	if got := b.pollInterval(now); got != 30*time.Second {
		t.Errorf("hooks active: %v, want 30s", got)
	}
	b.watch.lastHint = now.Add(-2 * time.Minute)
	if got := b.pollInterval(now); got != 10*time.Second {
		t.Errorf("hooks quiet for a window: %v, want POLL_INTERVAL", got)
	}
}

// TestEarliestTurn: while a hint waits, a turn begins up to half a spacing early, never
// sooner than half a spacing after the previous one, never later than due, and not early
// on a leader's first turn.
func TestEarliestTurn(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const spacing = 4 * time.Second
	for _, tt := range []struct {
		name      string
		due, last time.Duration // after t0; last < 0: no previous turn
		want      time.Duration
	}{
		{"half a spacing early", 4 * time.Second, 0, 2 * time.Second},
		{"a leader's first turn is not early", 4 * time.Second, -1, 4 * time.Second},
		{"half a spacing after the previous turn", 4 * time.Second, time.Second, 3 * time.Second},
		{"never after due", 4 * time.Second, 3 * time.Second, 4 * time.Second},
		{"a turn that cost two waits a spacing and a half", 8 * time.Second, 0, 6 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var last time.Time
			if tt.last >= 0 {
				last = t0.Add(tt.last)
			}
			if got := earliestTurn(t0.Add(tt.due), last, spacing); !got.Equal(t0.Add(tt.want)) {
				t.Errorf("earliestTurn = t0+%v, want t0+%v", got.Sub(t0), tt.want)
			}
		})
	}
}

// TestHintsShareTheTurns plays a steady stream of hints, with a re-read waiting every
// fifth turn, against the scheduler's and the watcher's decisions: one turn in eight
// goes to the rest, polls still come, and never two turns in a row (a poll, a re-read,
// the rest's turn) pass a waiting hint over.
func TestHintsShareTheTurns(t *testing.T) {
	var w watcher
	var s turns
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const pollInterval, turnEvery = 30 * time.Second, 4 * time.Second
	counts := map[stepKind]int{}
	polls, passedInARow := 0, 0
	for i := range 240 {
		w.hintCame(now) // a hook before every turn
		passed := true
		if order := s.order(now, pollInterval, time.Time{}, w.hintPassed()); order[0] == turnPoll {
			s.lastPoll = now
			w.passHint()
			polls++
		} else {
			s.lastWatch = now
			rest, wasPassed := w.restTurn()
			kind := chooseStep(waiting{refresh: i%5 == 0, hinted: true, dirty: true, sweep: true, roundRobin: true}, rest, wasPassed)
			w.tookTurn(w.hintGeneration(), 1, kind == stepHinted, rest)
			counts[kind]++
			passed = kind != stepHinted
		}
		if passedInARow = map[bool]int{true: passedInARow + 1, false: 0}[passed]; passedInARow > 1 {
			t.Fatalf("turn %d: two turns in a row passed a waiting hint over", i)
		}
		now = now.Add(turnEvery)
	}
	t.Logf("in 240 turns: %d polls, steps %v", polls, counts)
	if polls < 25 || counts[stepDirty] < 15 || counts[stepRefresh] < 15 || counts[stepHinted] < 150 {
		t.Errorf("in 240 turns: %d polls, steps %v; want about 30 polls, 25 to the rest, 30 re-reads", polls, counts)
	}
}

// TestHintBeginsTheTurnEarly: a hook on this replica or on another (sharing the store)
// naming a carded issue begins the leader's next turn at once when it is within half a
// spacing; without one, or in a full window, the turn waits for its time.
func TestHintBeginsTheTurnEarly(t *testing.T) {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), store.EmbeddedFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// 18 a window of 5 minutes: turns every 20 s; a turn due in 10 s may begin now.
	cfg := Config{RateLimit: 18, BudgetWindow: 5 * time.Minute, SharedHints: true}
	leader, other := New(cfg, nil, nil, st, nil, nil), New(cfg, nil, nil, st, nil, nil)
	const hinted = "issue_carded0001"
	if err := st.PutIssue(t.Context(), store.Issue{IssueUUID: hinted, Cards: []store.Card{{ChatID: "oc_a", MessageID: "om_a", SentAt: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	wait := func(due time.Time) <-chan time.Time {
		began := make(chan time.Time, 1)
		var seen string
		if v, err := st.Meta(t.Context(), metaHintSeq); err == nil {
			seen = v
		}
		go func() {
			if _, ok := leader.waitTurn(t.Context(), turnTime{due: due}, time.Now().Add(-time.Minute), &seen); ok {
				began <- time.Now()
			}
		}()
		return began
	}
	if due := time.Now().Add(200 * time.Millisecond); (<-wait(due)).Before(due) {
		t.Fatal("waitTurn returned before its time without a hint")
	}
	// A window without room for an early turn and one more request: the hint waits.
	full := guance.LimiterStats{Limit: 18, Reserve: 2, Used: 15}
	leader.cfg.Budget = func() guance.LimiterStats { return full }
	due := time.Now().Add(time.Second)
	began := wait(due)
	if _, _, err := leader.hint(t.Context(), []string{hinted}); err != nil {
		t.Fatal(err)
	}
	if (<-began).Before(due) {
		t.Error("a hint began a turn early in a full window")
	}
	leader.cfg.Budget = nil
	leader.watch.tookTurn(leader.watch.hintGeneration(), 0, false, false)
	leader.term.Store(1) // it holds the lease: its own hooks wake it, the store is not told
	for _, tt := range []struct {
		name   string
		from   *Bot
		within time.Duration // a local hook wakes the leader at once, sooner than it looks at the store (every 1.25 s)
	}{{"a hook on this replica", leader, time.Second}, {"a hook on another replica", other, 5 * time.Second}} {
		t.Run(tt.name, func(t *testing.T) {
			seq, _ := st.Meta(t.Context(), metaHintSeq)
			due := time.Now().Add(10 * time.Second)
			began := wait(due)
			if _, _, err := tt.from.hint(t.Context(), []string{hinted}); err != nil {
				t.Fatal(err)
			}
			if now, _ := st.Meta(t.Context(), metaHintSeq); (now != seq) != (tt.from == other) {
				t.Errorf("hint sequence %q → %q: want it changed by a replica that does not lead, only", seq, now)
			}
			select {
			case at := <-began:
				if !at.Before(due) {
					t.Errorf("the turn began at its time, not early")
				}
				leader.watch.tookTurn(leader.watch.hintGeneration(), 0, false, false) // the step served it
			case <-time.After(tt.within):
				t.Fatalf("the hint did not begin the turn within %v (it was due in 10 s)", tt.within)
			}
		})
	}
}

// TestRoomForEarly: a turn begins early only while the window has room for it and one
// more request, besides the reserve people's writes keep.
func TestRoomForEarly(t *testing.T) {
	for _, tt := range []struct {
		used, high int
		want       bool
	}{
		{0, 0, true},
		{14, 0, true},  // 18 - 14 - 2 reserved = 2 free
		{15, 0, false}, // 1 free: the extra request of a turn would wait
		{15, 1, true},  // one of the reserve is taken: 2 free
		{15, 4, true},  // people took more than their reserve: one more kept for them, 2 free
		{16, 4, false},
	} {
		st := guance.LimiterStats{Limit: 18, Reserve: 2, Used: tt.used, HighUsed: tt.high}
		if got := roomForEarly(st); got != tt.want {
			t.Errorf("used %d (people %d) of 18: roomForEarly = %v, want %v", tt.used, tt.high, got, tt.want)
		}
	}
}

// TestHintDuringAStepIsKept: a hook that comes while a watcher step reads the records
// (so the step does not see it) still waits when the step is done.
func TestHintDuringAStepIsKept(t *testing.T) {
	var w watcher
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	gen := w.hintGeneration() // the step reads the records
	w.hintCame(now)           // a hook meanwhile
	w.tookTurn(gen, 0, false, false)
	if !w.hintWaiting() {
		t.Error("the hint that came during the step was forgotten")
	}
	w.tookTurn(w.hintGeneration(), 0, false, false) // the next step finds nothing hinted
	if w.hintWaiting() {
		t.Error("a step that found no hinted issue left the hint waiting")
	}
}

// TestTurnTimeNarrows: a turn charged at a spacing people's writes widened is due
// sooner once they leave the window, never later than first charged, and never sooner
// than its floor.
func TestTurnTimeNarrows(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	// Charged two turns at a spacing of the whole window (people held it); the turn ended 1 s in.
	next := turnTime{due: t0.Add(2 * time.Minute), from: t0, cost: 2, floor: t0.Add(5 * time.Second)}
	if got := next.at(4 * time.Second); !got.Equal(t0.Add(8 * time.Second)) {
		t.Errorf("spacing narrowed to 4s: at t0+%v, want t0+8s", got.Sub(t0))
	}
	if got := next.at(time.Second); !got.Equal(next.floor) {
		t.Errorf("spacing narrowed to 1s: at t0+%v, want the floor, t0+5s", got.Sub(t0))
	}
	if got := next.at(2 * time.Minute); !got.Equal(next.due) {
		t.Errorf("spacing widened further: at t0+%v, want the first charge, t0+2m", got.Sub(t0))
	}
	if fixed := (turnTime{due: t0.Add(time.Minute)}); !fixed.at(time.Second).Equal(fixed.due) {
		t.Error("a fixed turn time moved")
	}
}

// TestBacklogDoesNotStallTheTurns: after an outage a backlog of people's writes fills
// the window while a turn runs. The turn is charged its own request only, and the next
// one waits for the spacing those writes widened while they are in the window, not after.
func TestBacklogDoesNotStallTheTurns(t *testing.T) {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), store.EmbeddedFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	const window = 6 * time.Second // 18 a window: a turn every 400 ms, 6 s while people hold it
	var mu sync.Mutex
	stats := guance.LimiterStats{Limit: 18, Reserve: 2}
	b := New(Config{RateLimit: 18, BudgetWindow: window, PollInterval: time.Hour, Budget: func() guance.LimiterStats {
		mu.Lock()
		defer mu.Unlock()
		return stats
	}}, nil, nil, st, nil, nil)
	grant := func(background, people uint64, inWindow int) {
		mu.Lock()
		defer mu.Unlock()
		stats.Granted += background + people
		stats.HighGranted += people
		stats.HighUsed, stats.Used = inWindow, inWindow
	}
	// The turn made one request while 17 of people's writes were granted.
	from, before := time.Now(), b.spent()
	grant(1, 17, 17)
	next := b.chargeTurn(from, before)
	if next.cost != 1 {
		t.Fatalf("the turn was charged %d requests, want its own 1", next.cost)
	}
	if got := next.due.Sub(from); got != window {
		t.Fatalf("next turn due in %v, want the whole window (%v) while people hold it", got, window)
	}
	began := make(chan time.Time, 1)
	go func() {
		var seen string
		if _, ok := b.waitTurn(t.Context(), next, from, &seen); ok {
			began <- time.Now()
		}
	}()
	select {
	case at := <-began:
		t.Fatalf("the turn began +%v after the last, while people's writes held the window", at.Sub(from))
	case <-time.After(time.Second): // 2.5 spacings of a quiet window
	}
	grant(0, 0, 0) // their writes leave the window
	select {
	case at := <-began:
		if !at.Before(next.due) {
			t.Errorf("the turn began at its first charge (+%v), not once people's writes left", at.Sub(from))
		}
	case <-time.After(window):
		t.Fatal("the turn did not begin")
	}
}
