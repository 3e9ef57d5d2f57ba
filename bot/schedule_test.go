package bot

import (
	"slices"
	"testing"
	"time"
)

func TestTurnOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const every = 2 * time.Second
	for _, tt := range []struct {
		name                string
		lastPoll, lastWatch time.Duration // before t0; 0 = never
		hint                time.Duration // a webhook asked for a poll, before t0; 0 = never
		want                []turn
	}{
		{"first turn polls", 0, 0, 0, []turn{turnPoll, turnWatch}},
		{"poll not due: only the watcher", time.Second, 10 * time.Second, 0, []turn{turnWatch}},
		{"both due, the watcher waited longer", 3 * time.Second, 5 * time.Second, 0, []turn{turnWatch, turnPoll}},
		{"both due, the poll waited longer", 6 * time.Second, 3 * time.Second, 0, []turn{turnPoll, turnWatch}},
		{"the watcher never ran", 3 * time.Second, 0, 0, []turn{turnWatch, turnPoll}},
		{"a hint since the last poll makes it due", time.Second, 10 * time.Second, 500 * time.Millisecond, []turn{turnWatch, turnPoll}},
		{"a hint before the last poll does not", time.Second, 10 * time.Second, 2 * time.Second, []turn{turnWatch}},
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
			if got := s.order(t0, every, hint); !slices.Equal(got, tt.want) {
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
			for _, tn := range s.order(now, pollInterval, time.Time{}) {
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
