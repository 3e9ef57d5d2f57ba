package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"issuebot/bot/feishu/feishutest"
	"issuebot/store"
)

// stormIssues is how many issues the storm of TestStormSurvivesRestarts brings.
const stormIssues = 64

// stormChat is what the chat holds: its storm digests, each issue's own cards, and how
// many top-level messages the bot posted.
type stormChat struct {
	digests  []feishutest.Message
	cards    map[string][]feishutest.Message
	topLevel int
}

// counting returns the digest whose current render has text (its total), or nil.
func (c stormChat) counting(text string) *feishutest.Message {
	for i, m := range c.digests {
		if strings.Contains(m.Content, text) {
			return &c.digests[i]
		}
	}
	return nil
}

func (r *rig) stormChat() stormChat {
	c := stormChat{cards: r.cards()}
	for _, m := range r.fs.Messages(restartChat) {
		if m.RootID != "" || m.SenderType != "app" {
			continue
		}
		c.topLevel++
		if isDigest(m) {
			c.digests = append(c.digests, m)
		}
	}
	return c
}

// listedSince reports whether Guance answered an issue list that arrived after since.
func (r *rig) listedSince(since time.Time) bool {
	for _, q := range r.gs.Requests() {
		if strings.HasSuffix(q.Path, "/issue/list") && q.Status == 200 && q.Time.After(since) {
			return true
		}
	}
	return false
}

// addIssuesPaced adds issues from..to-1, one every gap from now on.
func (r *rig) addIssuesPaced(ctx context.Context, from, to int, gap time.Duration) {
	start := time.Now()
	for i := from; i < to; i++ {
		if !sleepUntil(ctx, start.Add(time.Duration(i-from)*gap)) {
			return
		}
		r.addIssue(i, 0)
	}
}

// TestStormSurvivesRestarts: a storm of 64 issues within a minute into one chat at the
// default STORM_THRESHOLD (10), while the bot is SIGKILLed right after Feishu created
// the storm's digest (before the bot read the answer), SIGKILLed again right after the
// poll that put ten more issues into the digest (their render queued), SIGTERMed once
// while issues keep coming, and SIGKILLed right after Feishu created the card a click on
// the digest asked for. At the end the chat holds one digest that counts all 64, ten
// single cards (the threshold) and the clicked one, with one pointer to it in the
// digest's thread, and nothing else; no issue is carded twice, and every issue's record
// says where it is: its card's message, or the storm.
// (The storm's end, five calm minutes later, is tested across a restart in package bot
// on a compressed clock: TestStormEndSurvivesRestarts.)
func TestStormSurvivesRestarts(t *testing.T) {
	for _, tc := range []struct {
		kind string
		db   int
	}{{"embedded", 0}, {"redis", 7}} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, tc.kind, tc.db)
			r.env = slices.DeleteFunc(r.env, func(s string) bool { return strings.HasPrefix(s, "STORM_THRESHOLD=") })
			p := r.start("first", "INSTANCE_ID=replica-1")
			r.waitPolled(2)
			begin := time.Now()
			t.Cleanup(func() { r.logGuanceOnFailure(begin) })

			// 14 issues at once: ten cards, then the storm. The bot dies right after
			// Feishu created the digest.
			dead := r.killAfterSend(p, 30*time.Second, isDigest)
			r.addIssuesPaced(t.Context(), 0, 14, 0)
			<-dead
			if len(r.stormChat().digests) == 0 {
				t.Fatalf("no digest within 30 s\n%s", r.output())
			}
			t.Logf("%5.1fs: killed right after Feishu created the digest", time.Since(begin).Seconds())
			p = r.start("after-digest-kill", "INSTANCE_ID=replica-1")

			// Ten more at once: the bot dies right after the poll that lists them, while
			// they go into the digest and its render is queued.
			added := time.Now()
			r.addIssuesPaced(t.Context(), 14, 24, 0)
			deadline := time.Now().Add(30 * time.Second)
			for !r.listedSince(added) {
				if time.Now().After(deadline) {
					t.Fatalf("no issue list within 30 s\n%s", r.output())
				}
				sleepUntil(t.Context(), time.Now().Add(5*time.Millisecond))
			}
			p.kill()
			patches := len(r.stormChat().digests[0].Patches)
			t.Logf("%5.1fs: killed right after a poll (the digest patched %d times so far)", time.Since(begin).Seconds(), patches)
			p = r.start("after-poll-kill", "INSTANCE_ID=replica-1")

			// 40 more over 16 s, with a SIGTERM restart halfway.
			r.addIssuesPaced(t.Context(), 24, 44, 400*time.Millisecond)
			p.stop(t)
			t.Logf("%5.1fs: SIGTERM", time.Since(begin).Seconds())
			p = r.start("after-sigterm", "INSTANCE_ID=replica-1")
			r.addIssuesPaced(t.Context(), 44, stormIssues, 400*time.Millisecond)
			last := time.Now()

			total := fmt.Sprintf("Issue storm: %d issues", stormIssues)
			r.waitUntil(60*time.Second, "a digest that counts every issue, and the ten single cards", func() bool {
				c := r.stormChat()
				return c.counting(total) != nil && len(c.cards) == 10
			})
			t.Logf("%5.1fs: the digest counts all %d, %v after the last issue appeared",
				time.Since(begin).Seconds(), stormIssues, time.Since(last).Round(10*time.Millisecond))

			// The digest's Card button; the bot dies right after Feishu created that card.
			digest := *r.stormChat().counting(total)
			val := buttonValues(digest.Content)["card"]
			picked, _ := val["issue"].(string)
			if picked == "" {
				t.Fatalf("the digest has no Card button: %s", digest.Content)
			}
			dead = r.killAfterSend(p, 30*time.Second, func(m feishutest.Message) bool {
				return m.MsgType == "interactive" && m.RootID == "" && !isDigest(m) && strings.Contains(m.Content, picked)
			})
			clicked := make(chan error, 1)
			go func() {
				e := r.fs.CardActionEvent(feishutest.CardActionSpec{MessageID: digest.ID, OperatorOpenID: "ou_alice", Value: val})
				_, _, err := deliver(t.Context(), r.fs, e, 40*time.Second)
				clicked <- err
			}()
			<-dead
			t.Logf("%5.1fs: killed right after Feishu created the card asked for from the digest", time.Since(begin).Seconds())
			p = r.start("after-click-kill", "INSTANCE_ID=replica-1")
			if err := <-clicked; err != nil {
				t.Fatalf("the click was not delivered: %v", err)
			}
			pointers := func() int {
				n := 0
				for _, m := range r.fs.Messages(restartChat) {
					if m.RootID == digest.ID && m.SenderType == "app" && strings.Contains(m.Content, "Its own card is posted") {
						n++
					}
				}
				return n
			}
			r.waitUntil(30*time.Second, "the pointer in the digest's thread, and the digest showing the issue carded", func() bool {
				m, _ := r.fs.Message(digest.ID)
				return pointers() > 0 && !strings.Contains(m.Content, `"`+picked+`"`)
			})
			p.stop(t)

			c := r.stormChat()
			if len(c.digests) != 1 {
				t.Errorf("%d digests in the chat, want 1", len(c.digests))
			}
			if d, _ := r.fs.Message(digest.ID); !strings.Contains(d.Content, total) {
				t.Errorf("the digest's final render does not count all %d issues: %s", stormIssues, d.Content)
			} else {
				t.Logf("the digest was patched %d times", len(d.Patches))
			}
			if c.topLevel > 20 {
				t.Errorf("%d top-level messages in the chat, want at most 20", c.topLevel)
			}
			if len(c.cards) != 11 {
				t.Errorf("%d issues have cards of their own, want the threshold (10) and the one clicked", len(c.cards))
			}
			if len(c.cards[picked]) == 0 {
				t.Errorf("the issue clicked in the digest, %s, has no card", picked)
			}
			if n := pointers(); n != 1 {
				t.Errorf("%d pointers in the digest's thread, want 1", n)
			}
			for id, cs := range c.cards {
				if len(cs) != 1 {
					t.Errorf("issue %s has %d cards, want at most 1", id, len(cs))
				}
			}
			r.checkStormRecords(c)
			r.checkProcesses()
		})
	}
}

// checkStormRecords asserts, with every process stopped, that each issue's record has
// exactly its one place in the chat: the card posted for it, or the one storm's digest.
func (r *rig) checkStormRecords(c stormChat) {
	r.t.Helper()
	st, err := store.Open(r.t.Context(), r.envOf("REDIS_URL"), r.envOf("DATA_DIR"))
	if err != nil {
		r.t.Fatalf("open the store: %v", err)
	}
	defer func() { _ = st.Close() }()
	r.mu.Lock()
	ids := slices.Clone(r.order)
	r.mu.Unlock()
	storms := map[string]bool{}
	for _, id := range ids {
		rec, err := st.GetIssue(r.t.Context(), id)
		if err != nil {
			r.t.Errorf("issue %s: %v", id, err)
			continue
		}
		card := rec.Card(restartChat)
		switch cs := c.cards[id]; {
		case card == nil:
			r.t.Errorf("issue %s has no card entry for the chat", id)
		case len(cs) > 0 && card.MessageID != cs[0].ID:
			r.t.Errorf("issue %s has card %s in the chat, but its record says %+v", id, cs[0].ID, *card)
		case len(cs) == 0 && (card.MessageID != "" || card.Digest == ""):
			r.t.Errorf("issue %s has no card in the chat, but its record says %+v", id, *card)
		case card.Digest != "":
			storms[card.Digest] = true
		}
	}
	if len(storms) != 1 {
		r.t.Errorf("the digested issues are in %d storms, want 1", len(storms))
	}
}

// TestStormSurvivesAFrozenLeader: two replicas on one Redis take a storm at the default
// threshold while the leader is frozen (SIGSTOP) right after Feishu created the storm's
// digest — before the leader read the answer — for longer than its lease. The other
// replica takes over, finds the digest (Feishu's idempotency uuid) and puts the issues
// after it into that digest. Thawed (SIGCONT) with the digest's answer in hand, the old
// leader finds its term over and adds nothing (were it to go on, its storm writes would
// be refused by the lease's fence: TestDeposedLeaderCannotWriteStormState in package
// bot). At the end one digest counts every issue, ten issues have cards of their own,
// none twice, at most 20 top-level messages, and every record says where its issue is.
func TestStormSurvivesAFrozenLeader(t *testing.T) {
	t.Parallel()
	const issues = 34
	r := newRig(t, "redis", 8)
	r.env = slices.DeleteFunc(r.env, func(s string) bool { return strings.HasPrefix(s, "STORM_THRESHOLD=") })
	ps := map[string]*proc{
		"a": r.start("a", "INSTANCE_ID=replica-a"),
		"b": r.start("b", "INSTANCE_ID=replica-b"),
	}
	r.waitPolled(2)
	begin := time.Now()
	t.Cleanup(func() { r.logGuanceOnFailure(begin) })
	old, _ := leaderOf(ps)
	if old == "" {
		t.Fatalf("no replica leads\n%s", r.output())
	}
	other := map[string]string{"a": "b", "b": "a"}[old]

	// 14 at once: ten cards, then the digest, and the leader freezes.
	var frozen time.Time
	stopped := r.afterSend(30*time.Second, isDigest, func() {
		_ = ps[old].cmd.Process.Signal(syscall.SIGSTOP)
		frozen = time.Now()
	})
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = ps[old].cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw) // a frozen process would not die of SIGTERM
	r.addIssuesPaced(t.Context(), 0, 14, 0)
	<-stopped
	if len(r.stormChat().digests) == 0 {
		t.Fatalf("no digest within 30 s\n%s", r.output())
	}
	r.waitUntil(20*time.Second, "the other replica's takeover", func() bool {
		n, since := leaderOf(ps)
		return n == other && since.After(frozen)
	})
	t.Logf("%5.1fs: %s frozen right after Feishu created the digest; %s took over", time.Since(begin).Seconds(), old, other)

	// Twenty more under the new leader, then the old one thaws.
	r.addIssuesPaced(t.Context(), 14, 24, 0)
	r.addIssuesPaced(t.Context(), 24, issues, 200*time.Millisecond)
	thaw()
	r.waitUntil(20*time.Second, "the thawed replica stepping down", func() bool {
		return strings.Contains(ps[old].out.text(), `"lost the poller lease"`)
	})
	total := fmt.Sprintf("Issue storm: %d issues", issues)
	r.waitUntil(60*time.Second, "a digest that counts every issue, and the ten single cards", func() bool {
		c := r.stormChat()
		return c.counting(total) != nil && len(c.cards) == 10
	})
	t.Logf("%5.1fs: the digest counts all %d", time.Since(begin).Seconds(), issues)
	// The storm's end is looked at again after five calm minutes: that job stays.
	r.waitUntil(30*time.Second, "the queues drained (but for the storm's end)", func() bool {
		st, err := store.OpenRedis(t.Context(), r.envOf("REDIS_URL"))
		if err != nil {
			return false
		}
		defer st.Close()
		return queuesDrained(t.Context(), st, time.Minute)
	})
	for _, p := range ps {
		p.stop(t)
	}

	c := r.stormChat()
	if len(c.digests) != 1 {
		t.Errorf("%d digests in the chat, want 1", len(c.digests))
	}
	if d := c.counting(total); d == nil {
		t.Errorf("the digest's final render does not count all %d issues", issues)
	}
	if c.topLevel > 20 {
		t.Errorf("%d top-level messages in the chat, want at most 20", c.topLevel)
	}
	if len(c.cards) != 10 {
		t.Errorf("%d issues have cards of their own, want the threshold (10)", len(c.cards))
	}
	for id, cs := range c.cards {
		if len(cs) != 1 {
			t.Errorf("issue %s has %d cards, want 1", id, len(cs))
		}
	}
	r.checkStormRecords(c)
	r.checkProcesses()
}
