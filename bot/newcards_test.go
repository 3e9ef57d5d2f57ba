package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"issuebot/guance"
	"issuebot/guance/guancetest"
)

// TestNewIssuesCardedExactlyOnce plays 30 issues created over time, 5 of them
// visible only 60–90 s after their createAt, across a SIGTERM restart and a hard
// kill between sending a card and recording it: every issue gets exactly one card,
// and the fake Guance never throttles nor sees more than the budget in any window.
func TestNewIssuesCardedExactlyOnce(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			// Time is scaled: 18 requests per second stands for 18 per minute.
			h := newHarness(t, kind, 18, time.Second)
			// Issues that exist before the bot ever ran are not carded (no flood)...
			old := h.gs.AddIssue(guancetest.IssueSpec{Name: "old", CreateAt: time.Now().Add(-10 * time.Minute)})
			h.start()
			h.bootstrapped()

			var uuids []string
			add := func(i int, late bool) {
				spec := guancetest.IssueSpec{Name: fmt.Sprintf("issue %02d", i), Description: "<p>disk <b>full</b></p>"}
				if late {
					spec.CreateAt = time.Now().Add(-time.Duration(60+i%31) * time.Second)
				}
				uuids = append(uuids, h.gs.AddIssue(spec).UUID)
			}
			addBatch := func(from, to int, late map[int]bool) {
				for i := from; i < to; i++ {
					add(i, late[i])
					time.Sleep(15 * time.Millisecond) // issues arrive over time, not as one batch
				}
			}

			addBatch(0, 10, map[int]bool{3: true, 7: true})
			waitFor(t, 20*time.Second, "10 cards", func() bool { return h.cardCount() >= 10 })

			// SIGTERM restart in the middle of a batch.
			addBatch(10, 13, nil)
			h.terminate()
			addBatch(13, 16, map[int]bool{14: true})

			// Hard kill: the next card is sent, and the process dies before recording it.
			crashed := make(chan string, 1)
			var once sync.Once
			h.start(func(b *Bot) {
				ctx := h.ctx
				b.afterSend = func(issueUUID string) error {
					hit := false
					once.Do(func() { hit = true })
					if !hit {
						return nil
					}
					crashed <- issueUUID
					<-ctx.Done() // frozen until killed
					return errors.New("killed")
				}
			})
			var victim string
			select {
			case victim = <-crashed:
			case <-time.After(20 * time.Second):
				t.Fatal("no card was sent after the restart")
			}
			h.kill()
			if got := h.cardsFor(victim); got != 1 {
				t.Fatalf("victim %s has %d cards before restart, want 1 (sent, unrecorded)", victim, got)
			}
			if _, err := h.st.GetIssue(context.Background(), victim); err == nil {
				t.Fatalf("victim %s was recorded; the kill came too late to test anything", victim)
			}

			h.start()
			addBatch(16, 30, map[int]bool{20: true, 27: true})
			waitFor(t, 30*time.Second, "30 cards", func() bool { return h.cardCount() >= 30 })
			h.quiet(3)

			h.eachCardedOnce(uuids)
			for _, u := range uuids {
				rec, err := h.st.GetIssue(context.Background(), u)
				if err != nil || chatCard(rec).MessageID == "" {
					t.Errorf("issue %s record = %+v, %v", u, rec, err)
				}
			}
			if got := h.cardsFor(old.UUID); got != 0 {
				t.Errorf("pre-existing issue got %d cards, want 0", got)
			}
			if got := h.gs.Throttled(); got != 0 {
				t.Errorf("fake Guance throttled the bot %d times", got)
			}
			if got := h.gs.MaxInWindow(time.Second); got > 18 {
				t.Errorf("fake Guance saw %d requests in one window, budget 18", got)
			}
		})
	}
}

// TestFeishuFaultsAndBursts sends 40 issues at once into one chat while Feishu fails
// 2 % of sends with 5xx, loses some answers after committing, and throttles a chat
// above 5 messages a second: still exactly one card each.
func TestFeishuFaultsAndBursts(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.cfg.ChatSendInterval = time.Millisecond // burst far above Feishu's 5/s per chat
	h.fs.FailRate(0.02, 7)
	h.fs.LoseResponses(3)
	h.start()
	h.bootstrapped()
	var uuids []string
	for i := range 40 {
		uuids = append(uuids, h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("burst %d", i)}).UUID)
	}
	waitFor(t, 90*time.Second, "40 cards", func() bool { return h.cardCount() >= 40 })
	h.quiet(2)
	h.eachCardedOnce(uuids)
	if h.fs.Throttled() == 0 {
		t.Errorf("Feishu never throttled the burst; the test did not exercise waiting it out")
	}
}

// TestFailingChatDoesNotBlockOthers queues a card for a chat the bot has left and
// one for a healthy chat: the healthy one is delivered, the other kept for later.
func TestFailingChatDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	ctx := t.Context()
	gone := h.gs.AddIssue(guancetest.IssueSpec{Name: "to a chat without the bot"})
	fine := h.gs.AddIssue(guancetest.IssueSpec{Name: "to the issue chat"})
	issues, err := h.gc.ListAllIssues(ctx, guanceQueryAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range issues {
		chat := testChat
		if is.UUID == gone.UUID {
			chat = "oc_left"
		}
		b.cfg.ChatID = chat
		if err := b.queueCard(ctx, is); err != nil {
			t.Fatal(err)
		}
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	b.term.Store(1) // as the leader of term 1
	go func() { b.cards.Run(dctx); close(done) }()
	waitFor(t, 10*time.Second, "the healthy chat's card", func() bool { return h.cardsFor(fine.UUID) == 1 })
	waitFor(t, 10*time.Second, "the failed card rescheduled", func() bool {
		jobs, err := h.st.DueJobs(ctx, queueCards, time.Now().Add(time.Hour), 10)
		return err == nil && len(jobs) == 1 && jobs[0].Attempts == 1
	})
	cancel()
	<-done
	jobs, err := h.st.DueJobs(ctx, queueCards, time.Now().Add(time.Hour), 10)
	if err != nil || len(jobs) != 1 || jobs[0].ID != cardJobID(gone.UUID, "oc_left") || jobs[0].Attempts != 1 {
		t.Errorf("queued jobs = %+v, %v; want the failed card kept with one attempt", jobs, err)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "job failed; retrying") || !strings.Contains(logs, "reason=refused") {
		t.Errorf("the refused card was not logged")
	}
}

// TestThrottledPollBacksOff makes Guance throttle the bot: the poll backs off, never
// reports bad credentials, and the card still arrives once Guance recovers.
func TestThrottledPollBacksOff(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.start()
	h.bootstrapped()
	h.gs.ThrottleFor(500 * time.Millisecond)
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: "during throttling"})
	waitFor(t, 20*time.Second, "the card", func() bool { return h.cardsFor(is.UUID) == 1 })
	logs := h.logs.String()
	if !strings.Contains(logs, "guance throttled the poll") {
		t.Errorf("throttle not logged as such")
	}
	if strings.Contains(logs, "refused GUANCE_API_KEY") {
		t.Errorf("a throttle was reported as bad credentials")
	}
}

func guanceQueryAll() guance.IssueQuery {
	return guance.IssueQuery{ChannelUUID: guancetest.DefaultChannelUUID}
}

// TestFirstStartDuringOutage: when Guance is unreachable at the very first start,
// issues created during the outage are new (carded), those from before are not.
func TestFirstStartDuringOutage(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	before := h.gs.AddIssue(guancetest.IssueSpec{Name: "before the bot", CreateAt: time.Now().Add(-10 * time.Minute)})
	h.gs.Down(true)
	h.start()
	waitFor(t, 10*time.Second, "the first attempt", func() bool {
		v, err := h.st.Cursor(context.Background(), cursorFirstTry)
		return err == nil && v > 0
	})
	during := h.gs.AddIssue(guancetest.IssueSpec{Name: "during the outage"})
	// Let the outage outlast 3 poll intervals and the createAt second by a margin.
	deadline := time.Now().Add(2500 * time.Millisecond)
	waitFor(t, 5*time.Second, "the outage to go on", func() bool { return time.Now().After(deadline) })
	h.gs.Down(false)
	waitFor(t, 20*time.Second, "the outage issue's card", func() bool { return h.cardsFor(during.UUID) == 1 })
	h.quiet(2)
	if got := h.cardsFor(before.UUID); got != 0 {
		t.Errorf("issue from before the first start got %d cards", got)
	}
}
