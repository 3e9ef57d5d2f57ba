package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
)

// isDigest reports whether m is a storm digest card.
func isDigest(m feishutest.Message) bool {
	return m.MsgType == "interactive" && m.RootID == "" && strings.Contains(m.Content, "告警风暴")
}

// digestMessage returns the chat's storm digest message, if there is one.
func (h *harness) digestMessage(chat string) (feishutest.Message, bool) {
	for _, m := range h.fs.Messages(chat) {
		if isDigest(m) {
			return m, true
		}
	}
	return feishutest.Message{}, false
}

// topLevel counts the chat's top-level messages.
func (h *harness) topLevel(chat string) int {
	n := 0
	for _, m := range h.fs.Messages(chat) {
		if m.RootID == "" && m.SenderType == "app" {
			n++
		}
	}
	return n
}

// TestStormBecomesOneDigest: 120 new issues for one chat within a minute make at most
// 20 top-level messages there: single cards up to the threshold, then one live digest
// that counts all 120; its button posts one issue's own card, with a pointer in the
// digest's thread, and that card's thread syncs both ways; another group's issues still
// come as single cards; when the storm has been over for five windows the digest says
// so and single cards resume. The time scale is a 1 s budget window.
func TestStormBecomesOneDigest(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h := routeHarness(t, kind)
			h.cfg.StormThreshold = 10
			h.start()
			h.bootstrapped()
			h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind sre"))

			var storm []string
			for i := range 120 {
				is := h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("node-%03d down", i), Level: fmt.Sprintf("system_level_%d", 1+i%3)})
				storm = append(storm, is.UUID)
			}
			calm := h.gs.AddIssue(guancetest.IssueSpec{Name: "sre is calm", Channels: []string{"sre"}})
			waitFor(t, 60*time.Second, "every storm issue in the default chat's records", func() bool {
				for _, id := range storm {
					rec, err := h.st.GetIssue(context.Background(), id)
					if err != nil || rec.Card(testChat) == nil {
						return false
					}
				}
				return true
			})
			waitFor(t, 30*time.Second, "a digest that counts all 120", func() bool {
				m, ok := h.digestMessage(testChat)
				return ok && strings.Contains(m.Content, "Issue storm: 120 issues")
			})
			h.cardIn(chatSRE, calm.UUID)
			if n := h.topLevel(testChat); n > 20 {
				t.Errorf("%d top-level messages in the stormy chat, want at most 20", n)
			}
			if n := len(h.cardsIn(testChat)); n != 10 {
				t.Errorf("%d single cards before the digest, want the threshold, 10", n)
			}
			if n := len(h.cardsIn(chatSRE)); n != 1 {
				t.Errorf("the calm group holds %d cards, want its one issue's", n)
			}
			digest, _ := h.digestMessage(testChat)
			// Orange (P1, its highest level) while the storm goes on, green once it is over
			// (the colours themselves are checked by the cards package's golden tests).
			if over := strings.Contains(digest.Content, "storm is over"); !strings.Contains(digest.Content, map[bool]string{false: `"template":"orange"`, true: `"template":"green"`}[over]) {
				t.Errorf("the digest's header colour is wrong (storm over: %v)", over)
			}

			// The digest's button cards an issue; the digest's thread points to the card,
			// whose own thread syncs both ways.
			val := buttonValue(t, digest.Content, "card")
			picked := val["issue"].(string)
			h.click(digest.ID, "ou_alice", val)
			var card string
			waitFor(t, 20*time.Second, "the issue's card in the digest's thread", func() bool {
				card = chatCard(h.record(picked)).MessageID
				return card != ""
			})
			if m, ok := h.fs.Message(card); !ok || m.RootID != "" || m.MsgType != "interactive" {
				t.Errorf("the picked card %+v is not a card of its own", m)
			}
			waitFor(t, 20*time.Second, "the pointer in the digest's thread", func() bool {
				for _, m := range h.fs.Messages(testChat) {
					if m.RootID == digest.ID && m.SenderType == "app" && strings.Contains(m.Content, "Its own card is posted") {
						return true
					}
				}
				return false
			})
			h.deliver(h.fs.MessageEvent(feishutest.MessageSpec{ChatID: testChat, RootID: card,
				SenderOpenID: "ou_alice", Content: feishutest.TextContent("on it")}))
			waitFor(t, 20*time.Second, "the thread reply in Guance", func() bool { return len(h.botReplies(picked)) == 1 })
			h.gs.AddHumanReply(picked, "李四", "thanks")
			waitFor(t, 30*time.Second, "the Guance reply under the picked card", func() bool {
				for _, m := range h.fs.Messages(testChat) {
					if m.RootID == card && m.SenderType == "app" && strings.Contains(m.Content, "thanks") {
						return true
					}
				}
				return false
			})

			// Over after five calm windows; then single cards again.
			waitFor(t, 30*time.Second, "the digest saying the storm is over", func() bool {
				m, _ := h.digestMessage(testChat)
				return strings.Contains(m.Content, "storm is over")
			})
			after := h.gs.AddIssue(guancetest.IssueSpec{Name: "after the storm"})
			h.cardIn(testChat, after.UUID)
			if n := len(h.cardsIn(testChat)[after.UUID]); n != 1 {
				t.Errorf("the issue after the storm has %d cards, want 1", n)
			}
			list := h.answer(testChat, h.say(testChat, "ou_alice", "list"))
			if !strings.Contains(list, "Open issues (121)") {
				t.Errorf("list after the storm does not count every open issue (121): %s", list)
			}
		})
	}
}

// TestStormEndSurvivesRestarts: a chat's storm state and the check that ends it are kept
// in the store. A bot restarted right after the digest was posted and again during the
// calm goes on with the same digest: it says the storm is over five calm windows after
// the last hot one, counting every issue, and single cards resume. The time scale is a
// 1 s budget window.
func TestStormEndSurvivesRestarts(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, kind, 18, time.Second)
			h.cfg.StormThreshold = 10
			h.start()
			h.bootstrapped()
			for i := range 30 {
				h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("node-%02d down", i)})
			}
			waitFor(t, 30*time.Second, "the digest", func() bool {
				_, ok := h.digestMessage(testChat)
				return ok
			})
			h.terminate()
			h.start()
			waitFor(t, 10*time.Second, "a poll after the restart", func() bool { return h.bot.lastPoll.Load() != 0 })
			h.kill()
			var s stormState
			raw, err := h.st.Meta(t.Context(), metaStorm+testChat)
			if err == nil {
				err = json.Unmarshal([]byte(raw), &s)
			}
			if err != nil {
				t.Fatalf("read the storm state: %v", err)
			}
			if s.current() == nil {
				t.Fatal("the storm ended before the second restart")
			}
			h.start()
			// The end may be rendered before the window's last single card is recorded (Feishu's
			// pace, throttling); the digest counts it once it is.
			waitFor(t, 30*time.Second, "the digest saying the storm is over, counting all 30", func() bool {
				m, _ := h.digestMessage(testChat)
				return strings.Contains(m.Content, "The storm is over: 30 issues")
			})
			after := h.gs.AddIssue(guancetest.IssueSpec{Name: "after the storm"})
			h.cardIn(testChat, after.UUID)
			digests := 0
			for _, m := range h.fs.Messages(testChat) {
				if isDigest(m) {
					digests++
				}
			}
			if digests != 1 {
				t.Errorf("%d digests in the chat, want 1", digests)
			}
			if m, _ := h.digestMessage(testChat); !strings.Contains(m.Content, "The storm is over: 30 issues") {
				t.Errorf("the ended digest does not count all 30: %s", m.Content)
			}
			cards := h.cardsIn(testChat)
			if n := len(cards); n != 11 {
				t.Errorf("%d single cards, want the threshold (10) and the one after the storm", n)
			}
			for id, cs := range cards {
				if len(cs) != 1 {
					t.Errorf("issue %s has %d cards, want 1", id, len(cs))
				}
			}
		})
	}
}

// stormByHand is a harness with a storm threshold of 3 at Feishu's real pace, a Bot
// stepped by hand as the leader of term 1, and five new issues in Guance, as listed.
func stormByHand(t *testing.T) (*harness, *Bot, []guance.Issue) {
	t.Helper()
	h := newHarness(t, "embedded", 18, time.Minute)
	h.cfg.StormThreshold = 3
	h.cfg.ChatSendInterval = 250 * time.Millisecond // Feishu's 5 a second per chat
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	b.term.Store(1)
	for i := range 5 {
		h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("node-%02d down", i)})
	}
	issues, err := h.gc.ListAllIssues(t.Context(), guanceQueryAll())
	if err != nil {
		t.Fatal(err)
	}
	return h, b, issues
}

// TestStormGateAgainKeepsThePostedCard: an issue whose poll was cut short after its card
// job was stored (a crash, or a store error, before it was marked seen) is gated again
// by the next poll, perhaps after a storm began. It keeps the card it was given: one
// posted already stays in its record (else it would no longer be patched nor get Guance
// replies), and one still queued is posted. A digested issue carded from the digest and
// gated again keeps its card too.
func TestStormGateAgainKeepsThePostedCard(t *testing.T) {
	h, b, issues := stormByHand(t)
	ctx := t.Context()
	gate := func(is guance.Issue) {
		t.Helper()
		if err := b.queueCard(ctx, is); err != nil {
			t.Fatal(err)
		}
	}
	pass := func(q interface{ Pass(context.Context) error }) {
		t.Helper()
		if err := q.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	posted, queued, rest := issues[0], issues[1], issues[2:]
	gate(posted)
	pass(b.cards)
	card := chatCard(h.record(posted.UUID)).MessageID
	if card == "" {
		t.Fatal("the first issue's card was not recorded")
	}
	gate(queued)
	for _, is := range rest {
		gate(is)
	}
	if s, err := b.loadStorm(ctx, testChat); err != nil || s.current() == nil {
		t.Fatalf("no storm after 5 issues in a minute (%v)", err)
	}
	gate(posted) // the next polls see them again
	gate(queued)
	for range 3 { // one card of the chat per pass
		pass(b.cards)
	}
	if c := chatCard(h.record(posted.UUID)); c.MessageID != card {
		t.Errorf("the posted issue's card entry after a repeated gate = %+v, want its card %s kept", c, card)
	}
	if c := chatCard(h.record(queued.UUID)); c.MessageID == "" || h.cardsFor(queued.UUID) != 1 {
		t.Errorf("the queued issue, gated again: entry %+v, %d cards; want its one card", c, h.cardsFor(queued.UUID))
	}

	digested := rest[len(rest)-1]
	if c := chatCard(h.record(digested.UUID)); c.Digest == "" || c.MessageID != "" {
		t.Fatalf("the last issue is not digest-only: %+v", c)
	}
	pass(b.patches)
	digest, ok := h.digestMessage(testChat)
	if !ok {
		t.Fatal("no digest posted")
	}
	job := cardJob{Issue: digested, ChatID: testChat, Thread: digest.ID} // as its Card button asks
	if err := b.cards.Enqueue(ctx, cardJobID(digested.UUID, testChat), job, time.Now()); err != nil {
		t.Fatal(err)
	}
	pass(b.cards)
	card = chatCard(h.record(digested.UUID)).MessageID
	if card == "" {
		t.Fatal("the card asked for from the digest was not recorded")
	}
	gate(digested)
	if c := chatCard(h.record(digested.UUID)); c.MessageID != card {
		t.Errorf("the issue carded from the digest, gated again: %+v, want its card %s kept", c, card)
	}
}

// TestDigestSentAgainShowsWhatItCounts: when the answer to a digest's post is lost (or
// the bot dies before reading it), the repeated post gets the message first sent, which
// shows what the digest counted then; the digest is rendered once more, so it shows what
// it counts now without waiting for the storm's next change.
func TestDigestSentAgainShowsWhatItCounts(t *testing.T) {
	h, b, issues := stormByHand(t)
	var offset atomic.Int64
	b.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ctx := t.Context()
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, is := range issues[:4] { // three cards, then the storm
		step(b.queueCard(ctx, is))
	}
	for range 3 {
		step(b.cards.Pass(ctx))
	}
	h.fs.LoseResponses(1)
	step(b.patches.Pass(ctx)) // the digest is posted; its answer is lost
	if _, ok := h.digestMessage(testChat); !ok {
		t.Fatal("no digest posted")
	}
	step(b.queueCard(ctx, issues[4])) // the storm goes on meanwhile
	for range 3 {
		offset.Add(int64(2 * patchEvery))
		step(b.patches.Pass(ctx))
	}
	if m, _ := h.digestMessage(testChat); !strings.Contains(m.Content, "Issue storm: 5 issues") {
		t.Errorf("the digest posted again does not count all 5: %s", m.Content)
	}
}

// TestDeposedLeaderCannotWriteStormState: once another replica holds the poller lease
// under a newer term, the old leader's storm writes are refused and change nothing.
func TestDeposedLeaderCannotWriteStormState(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Minute)
	h.cfg.StormThreshold = 3
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	ctx := t.Context()
	old, err := h.st.AcquireLease(ctx, leasePoller, store.Holder{Instance: "a", Incarnation: "1"}, time.Millisecond)
	if err != nil || old == 0 {
		t.Fatalf("AcquireLease = %d, %v", old, err)
	}
	b.term.Store(old)
	if _, err := b.stormGate(ctx, testChat, "issue_a"); err != nil {
		t.Fatalf("gate as the leader: %v", err)
	}
	before, err := h.st.Meta(ctx, metaStorm+testChat)
	if err != nil || before == "" {
		t.Fatalf("storm state after the leader's gate = %q, %v; want one", before, err)
	}
	waitFor(t, 5*time.Second, "another replica takes the lease", func() bool {
		term, err := h.st.AcquireLease(ctx, leasePoller, store.Holder{Instance: "b", Incarnation: "1"}, time.Hour)
		return err == nil && term > old
	})
	if _, err := b.stormGate(ctx, testChat, "issue_b"); !errors.Is(err, errAbandoned) {
		t.Errorf("gate by the deposed leader: err = %v, want errAbandoned", err)
	}
	if err := b.forgetChat(ctx, testChat); !errors.Is(err, errAbandoned) {
		t.Errorf("forgetChat by the deposed leader: err = %v, want errAbandoned", err)
	}
	if after, err := h.st.Meta(ctx, metaStorm+testChat); err != nil || after != before {
		t.Errorf("storm state after the deposed writes = %q, %v; want it unchanged (%q)", after, err, before)
	}
}
