package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
	"issuebot/bot/jobs"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"

	dto "github.com/prometheus/client_model/go"
)

// guancePosts returns the bot's posts of Guance replies in a card's thread.
func (h *harness) guancePosts(card string) []feishutest.Message {
	var out []feishutest.Message
	for _, m := range h.fs.Messages(testChat) {
		if m.RootID == card && m.MsgType == "text" && strings.Contains(m.Content, "[Guance]") {
			out = append(out, m)
		}
	}
	return out
}

// textOf decodes a text message's content.
func textOf(t testing.TB, content string) string {
	t.Helper()
	var v struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(content), &v); err != nil {
		t.Fatalf("text content %s: %v", content, err)
	}
	return v.Text
}

// record reads an issue's record.
func (h *harness) record(issueUUID string) store.Issue {
	h.t.Helper()
	rec, err := h.st.GetIssue(context.Background(), issueUUID)
	if err != nil {
		h.t.Fatalf("read record of %s: %v", issueUUID, err)
	}
	return rec
}

// scannedTwice waits until the issue's replies were read twice more from now on, so
// anything that was going to be posted has been.
func (h *harness) scannedTwice(issueUUID string) {
	h.t.Helper()
	last, n := h.record(issueUUID).RepliesScannedAt, 0
	waitFor(h.t, 60*time.Second, "two more reply scans of "+issueUUID, func() bool {
		if at := h.record(issueUUID).RepliesScannedAt; at.After(last) {
			last, n = at, n+1
		}
		return n >= 2
	})
	waitFor(h.t, 20*time.Second, "an empty thread queue", func() bool {
		c, err := h.st.CountJobs(context.Background(), queueThread)
		return err == nil && c == 0
	})
}

// settled waits until what the watcher learnt of an issue is on its card: no re-read
// pending, no patch queued, and the card showing the record's revision.
func (h *harness) settled(issueUUID string) {
	h.t.Helper()
	waitFor(h.t, 30*time.Second, "the card of "+issueUUID+" settled", func() bool {
		r := h.record(issueUUID)
		n, err := h.patchesDue()
		return !r.Refresh && chatCard(r).PatchedRevision == r.CardRevision && err == nil && n == 0
	})
}

// patchesDue counts the patch jobs due within the hour: not the expiry notes, which are
// due days later.
func (h *harness) patchesDue() (int, error) {
	jobs, err := h.st.DueJobs(context.Background(), queuePatches, time.Now().Add(time.Hour), 0)
	return len(jobs), err
}

// ageCard makes an issue's card 15 days old on the bot's side (past Feishu's 14-day
// patch window).
func (h *harness) ageCard(issueUUID string) {
	h.t.Helper()
	if _, err := h.st.UpdateIssue(context.Background(), issueUUID, func(r *store.Issue) error {
		r.Cards[0].SentAt = time.Now().Add(-15 * 24 * time.Hour)
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

// cardContent is the current content of a card message.
func (h *harness) cardContent(card string) string {
	m, ok := h.fs.Message(card)
	if !ok {
		h.t.Fatalf("no message %s", card)
	}
	return m.Content
}

// buttonValue finds the callback value of the card's button for action.
func buttonValue(t testing.TB, content, action string) map[string]any {
	t.Helper()
	vals, err := feishutest.ButtonValues(content)
	if err != nil {
		t.Fatal(err)
	}
	found := vals[action]
	if found == nil {
		t.Fatalf("card has no %s button:\n%s", action, content)
	}
	return found
}

// TestGuanceRepliesReachThreadOnce: a reply written in Guance appears once in the
// card's thread, with its author and time, HTML made plain; the bot's own replies (by
// uuid and by API key) and change entries never come back; an outage of Guance, Feishu
// 5xx, a restart and a kill between post and record lose and repeat nothing. In both
// behaviours of updateAt.
func TestGuanceRepliesReachThreadOnce(t *testing.T) {
	for _, bumps := range []bool{true, false} {
		t.Run(fmt.Sprintf("replyBumpsUpdateAt=%v", bumps), func(t *testing.T) {
			h := newHarness(t, "embedded", 18, time.Second)
			h.gs.ReplyBumpsUpdateAt = bumps
			h.intake = true
			h.fs.AddUser("ou_alice", "张三")
			crashed := make(chan string, 1)
			h.start()
			h.bootstrapped()
			issue, card := h.cardedIssue("db-1 down")

			first := h.gs.AddHumanReply(issue, "王五", "<p>已重启 <b>db-1</b> &amp; 观察中</p>")
			written := time.Unix(first.CreateAt, 0).UTC().Format("2006-01-02")
			waitFor(t, 30*time.Second, "the first Guance reply in the thread", func() bool { return len(h.guancePosts(card)) == 1 })
			post := h.guancePosts(card)[0]
			if text := textOf(t, post.Content); !strings.HasPrefix(text, "[Guance] 王五 · "+written) ||
				!strings.HasSuffix(text, "\n已重启 db-1 & 观察中") {
				t.Errorf("thread post = %q", text)
			}
			// The thread is recorded right after Feishu answered the post.
			waitFor(t, 10*time.Second, "the thread recorded", func() bool { return chatCard(h.record(issue)).ThreadID != "" })
			rec := h.record(issue)
			if post.ThreadID != chatCard(rec).ThreadID {
				t.Errorf("thread not recorded: record %q, post %q", chatCard(rec).ThreadID, post.ThreadID)
			}
			if got, err := h.st.IssueByMessage(t.Context(), chatCard(rec).ThreadID); err != nil || got.IssueUUID != issue {
				t.Errorf("thread %s maps to %q, %v", chatCard(rec).ThreadID, got.IssueUUID, err)
			}

			// The bot's own replies: one synced from the thread, one written with its key.
			if ack, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_mine", card, "已处理")); err != nil || ack.Code != 200 {
				t.Fatalf("deliver: %v %v", ack, err)
			}
			waitFor(t, 20*time.Second, "the chat reply in Guance", func() bool { return len(h.botReplies(issue)) == 1 })
			if _, err := h.gc.CreateReply(guance.WithPriority(t.Context(), guance.PriorityHigh), issue, "written with the bot's key"); err != nil {
				t.Fatal(err)
			}
			// Another integration's key (a DingTalk bridge, say) is not the bot's.
			h.gs.AddHumanReply(issue, "wsak_dingtalk", "[钉钉] 赵六: relayed")
			// A status change in Guance: a change entry, shown on the card, not in the thread.
			h.gs.SetStatus(issue, 30)

			// Guance down while a reply is written.
			h.gs.Down(true)
			h.gs.AddHumanReply(issue, "王五", "during the outage")
			// The outage lasts until the bot has failed some requests.
			waitFor(t, 20*time.Second, "requests failing during the outage", func() bool {
				n := 0
				for _, r := range h.gs.Requests() {
					if r.Status == 503 {
						n++
					}
				}
				return n >= 3
			})
			h.gs.Down(false)
			// Feishu failing the next posts.
			h.fs.FailNext(2, 500, feishutest.CodeInternal)
			h.gs.AddHumanReply(issue, "王五", "while Feishu fails")
			waitFor(t, 30*time.Second, "four replies in the thread", func() bool { return len(h.guancePosts(card)) == 4 })

			// A restart, then a kill after Feishu accepted a post and before it was recorded.
			h.terminate()
			// The thread queue is empty after the SIGTERM: this process's first post is
			// the reply below.
			h.start(func(b *Bot) { b.afterThreadPost = h.crashOnce(crashed) })
			crashOn := h.gs.AddHumanReply(issue, "王五", "after the restart").UUID
			select {
			case got := <-crashed:
				if got != crashOn {
					t.Fatalf("the first post after the restart was %s, want %s", got, crashOn)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the post after the restart never happened")
			}
			h.kill()
			h.start()
			// The new process knows its key's id from the store: another key's reply is posted.
			h.gs.AddHumanReply(issue, "wsak_dingtalk", "[钉钉] 赵六: relayed again")
			h.gs.AddHumanReply(issue, "王五", "last one")
			waitFor(t, 30*time.Second, "seven replies in the thread", func() bool { return len(h.guancePosts(card)) == 7 })
			h.scannedTwice(issue)

			posts := h.guancePosts(card)
			var texts []string
			for _, p := range posts {
				texts = append(texts, p.Content)
			}
			joined := strings.Join(texts, "\n")
			if len(posts) != 7 {
				t.Errorf("%d posts, want 7:\n%s", len(posts), joined)
			}
			for i, want := range []string{"已重启", "[钉钉] 赵六: relayed", "during the outage", "while Feishu fails", "after the restart",
				"relayed again", "last one"} {
				if i < len(texts) && !strings.Contains(texts[i], want) {
					t.Errorf("post %d = %s, want %q (in order)", i, texts[i], want)
				}
			}
			for _, echo := range []string{"已处理", "the bot's key", "状态由"} {
				if strings.Contains(joined, echo) {
					t.Errorf("the bot echoed %q into the thread", echo)
				}
			}
			waitFor(t, 20*time.Second, "the card showing Pending", func() bool {
				return strings.Contains(h.cardContent(card), `"content":"Pending"`)
			})
			if rec := h.record(issue); rec.SyncedReplies != 8 {
				t.Errorf("synced replies = %d, want 8 (7 from Guance, 1 from the chat)", rec.SyncedReplies)
			}
			waitFor(t, 20*time.Second, "the card counting 8 replies", func() bool {
				return strings.Contains(h.cardContent(card), "8 replies synced")
			})
		})
	}
}

// TestGuanceChangesRerenderCard: status, level and title changes made in Guance
// re-render the card in place, saying who changed the status.
func TestGuanceChangesRerenderCard(t *testing.T) {
	h := newHarness(t, "redis", 18, time.Second)
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("disk full on web-3")
	h.gs.SetStatus(issue, 20)
	waitFor(t, 30*time.Second, "the card showing Resolved", func() bool {
		c := h.cardContent(card)
		return strings.Contains(c, `"content":"Resolved"`) && strings.Contains(c, `"template":"green"`)
	})
	c := h.cardContent(card)
	if !strings.Contains(c, guancetest.DefaultPerson+" &#40;Guance&#41; resolved") || strings.Contains(c, `"action":"resolve"`) {
		t.Errorf("resolved card: who missing or Resolve button still there:\n%s", c)
	}
	h.gs.SetStatus(issue, 10)
	h.gs.SetTitle(issue, "disk full on web-3 (again)")
	h.gs.SetLevel(issue, "system_level_0")
	waitFor(t, 30*time.Second, "the card showing the new title and level", func() bool {
		c := h.cardContent(card)
		return strings.Contains(c, "disk full on web-3 (again)") && strings.Contains(c, `"template":"red"`) &&
			strings.Contains(c, `"content":"Open"`)
	})
	if m, _ := h.fs.Message(card); len(m.Patches) < 2 {
		t.Errorf("%d patches, want the card patched in place", len(m.Patches))
	}
	if n := h.cardCount(); n != 1 {
		t.Errorf("%d cards in the chat, want 1 (patched, not reposted)", n)
	}
}

// TestCardPatchesCoalesced: 20 changes to one issue within a second make at most two
// patches, and the card ends showing the last.
func TestCardPatchesCoalesced(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	b := h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("flapping")
	is, ok := h.gs.Issue(issue)
	if !ok {
		t.Fatal("no issue")
	}
	h.gs.SetTitle(issue, "flapping #20")
	base, err := h.gc.GetIssue(guance.WithPriority(t.Context(), guance.PriorityHigh), is.UUID)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 1; i <= 20; i++ {
		got := *base
		got.Name = fmt.Sprintf("flapping #%d", i)
		got.UpdateAt = guance.Time(base.UpdateAt.Unix() + int64(i)) // each a newer state
		if err := b.observe(t.Context(), got, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// The rule is one patch a second: 20 changes within a second make at most 2. On a
	// machine too slow to make them within a second, each further second allows one.
	allowed := 2 + int(time.Since(start)/patchEvery)
	waitFor(t, 20*time.Second, "the last title on the card", func() bool {
		return strings.Contains(h.cardContent(card), "flapping #20")
	})
	// Give a third patch every chance to happen.
	deadline := time.Now().Add(2 * patchEvery)
	waitFor(t, 10*time.Second, "two patch intervals", func() bool { return time.Now().After(deadline) })
	m, _ := h.fs.Message(card)
	if len(m.Patches) > allowed {
		t.Errorf("%d patches for 20 changes, want at most %d", len(m.Patches), allowed)
	}
}

// click delivers a button click on card over the long connection and returns the ack.
func (h *harness) click(card, operator string, value map[string]any) (feishutest.Ack, time.Duration) {
	h.t.Helper()
	start := time.Now()
	ack, err := h.fs.DeliverWS(h.t.Context(), h.fs.CardActionEvent(feishutest.CardActionSpec{
		MessageID: card, OperatorOpenID: operator, Value: value,
	}))
	if err != nil || ack.Code != 200 {
		h.t.Fatalf("deliver click: %v %v", ack, err)
	}
	return ack, time.Since(start)
}

// TestResolveButton: Resolve sends exactly {"statusType":20}, answers within 3 s with a
// toast and the new card (who did it); a click on a stale card does not undo it.
func TestResolveButton(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, kind, 18, time.Second)
			h.intake = true
			h.fs.AddUser("ou_alice", "张三")
			h.fs.AddUser("ou_bob", "李四")
			h.start()
			h.bootstrapped()
			issue, card := h.cardedIssue("api 5xx")
			open := h.cardContent(card)

			// Pending, from the card as sent.
			ack, took := h.click(card, "ou_alice", buttonValue(t, open, "pending"))
			if took > 3*time.Second {
				t.Errorf("the click took %v to answer", took)
			}
			var resp struct {
				Toast struct {
					Type string            `json:"type"`
					I18n map[string]string `json:"i18n"`
				} `json:"toast"`
				Card struct {
					Type string          `json:"type"`
					Data json.RawMessage `json:"data"`
				} `json:"card"`
			}
			if err := json.Unmarshal(ack.Data, &resp); err != nil {
				t.Fatalf("answer %s: %v", ack.Data, err)
			}
			if resp.Toast.Type != "success" || resp.Toast.I18n["zh_cn"] == "" || resp.Toast.I18n["en_us"] == "" || resp.Card.Type != "raw" {
				t.Errorf("answer = %s", ack.Data)
			}
			pending := string(resp.Card.Data)
			if !strings.Contains(pending, `"content":"Pending"`) || !strings.Contains(pending, "张三") {
				t.Errorf("answered card does not show Pending by 张三:\n%s", pending)
			}
			if is, _ := h.gs.Issue(issue); is.StatusType != 30 {
				t.Errorf("Guance status = %d, want 30", is.StatusType)
			}
			// Resolve, from the pending card.
			h.click(card, "ou_alice", buttonValue(t, pending, "resolve"))
			if is, _ := h.gs.Issue(issue); is.StatusType != 20 {
				t.Errorf("Guance status = %d, want 20", is.StatusType)
			}
			bodies := h.gs.ModifyBodies()
			if len(bodies) != 2 || string(bodies[0]) != `{"statusType":30}` || string(bodies[1]) != `{"statusType":20}` {
				t.Errorf("modify bodies = %q", bodies)
			}
			// Bob still sees the pending card and clicks Reopen; then the original card's Pending.
			for _, v := range []map[string]any{buttonValue(t, pending, "reopen"), buttonValue(t, open, "pending")} {
				ack, _ := h.click(card, "ou_bob", v)
				if !strings.Contains(string(ack.Data), `"warning"`) || !strings.Contains(string(ack.Data), "Resolved") {
					t.Errorf("stale click answer = %s", ack.Data)
				}
			}
			if is, _ := h.gs.Issue(issue); is.StatusType != 20 {
				t.Errorf("a stale click changed the status to %d", is.StatusType)
			}
			if n := len(h.gs.ModifyBodies()); n != 2 {
				t.Errorf("%d modify calls, want 2 (stale clicks change nothing)", n)
			}
			c := h.cardContent(card)
			if !strings.Contains(c, `"content":"Resolved"`) || !strings.Contains(c, "张三") {
				t.Errorf("card after the clicks:\n%s", c)
			}
			// The bot's own change is not reported back as a change by someone else.
			h.scannedTwice(issue)
			h.settled(issue)
			if c := h.cardContent(card); strings.Contains(c, "Guance&#41;") {
				t.Errorf("the bot's own change came back as a Guance change:\n%s", c)
			}
		})
	}
}

// TestClickWhileGuanceBusyIsQueued: when Guance cannot answer in time, the click is
// answered at once, the change is made when Guance is back, and the card follows.
func TestClickWhileGuanceBusyIsQueued(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.intake = true
	h.fs.AddUser("ou_alice", "张三")
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("queue lag")
	h.gs.Down(true)
	ack, took := h.click(card, "ou_alice", buttonValue(t, h.cardContent(card), "resolve"))
	if took > 3*time.Second || !strings.Contains(string(ack.Data), "queued") {
		t.Errorf("busy click answered in %v with %s", took, ack.Data)
	}
	h.gs.Down(false)
	waitFor(t, 30*time.Second, "the queued change in Guance", func() bool {
		is, _ := h.gs.Issue(issue)
		return is.StatusType == 20
	})
	waitFor(t, 30*time.Second, "the card showing Resolved", func() bool {
		return strings.Contains(h.cardContent(card), `"content":"Resolved"`)
	})
	for _, b := range h.gs.ModifyBodies() {
		if string(b) != `{"statusType":20}` {
			t.Errorf("modify body %s", b)
		}
	}
}

// TestStatusCommandsInThread: @bot resolve / pending / reopen in a card's thread do
// what the buttons do, and react to the message; outside a thread they explain.
func TestStatusCommandsInThread(t *testing.T) {
	h := startReplyHarness(t, nil)
	issue, card := h.cardedIssue("cert expiry")
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	for i, step := range []struct {
		text string
		want int
	}{{"@_user_1 pending", 30}, {"@_user_1 resolve", 20}, {"@_user_1 reopen", 10}} {
		id := fmt.Sprintf("om_cmd%d", i)
		ev := h.fs.MessageEvent(feishutest.MessageSpec{MessageID: id, RootID: card, ChatID: testChat, SenderOpenID: "ou_alice",
			Content: feishutest.TextContent(step.text), Mentions: []feishutest.Mention{bot}})
		for range 2 { // a redelivery does nothing more
			if ack, err := h.fs.DeliverWS(t.Context(), ev); err != nil || ack.Code != 200 {
				t.Fatalf("deliver: %v %v", ack, err)
			}
		}
		waitFor(t, 20*time.Second, step.text, func() bool {
			is, _ := h.gs.Issue(issue)
			m, _ := h.fs.Message(id)
			return is.StatusType == step.want && len(m.Reactions) == 1
		})
	}
	if n := len(h.gs.ModifyBodies()); n != 3 {
		t.Errorf("%d modify calls, want 3", n)
	}
	waitFor(t, 20*time.Second, "the card showing Open, reopened by 张三", func() bool {
		c := h.cardContent(card)
		return strings.Contains(c, `"content":"Open"`) && strings.Contains(c, "张三 reopened")
	})
	if len(h.botReplies(issue)) != 0 {
		t.Errorf("commands were posted to Guance as replies: %q", h.botReplies(issue))
	}
	// Outside a thread: a note, no change.
	ev := h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_loose", ChatID: testChat, SenderOpenID: "ou_alice",
		Content: feishutest.TextContent("@_user_1 resolve"), Mentions: []feishutest.Mention{bot}})
	if ack, err := h.fs.DeliverWS(t.Context(), ev); err != nil || ack.Code != 200 {
		t.Fatalf("deliver: %v %v", ack, err)
	}
	waitFor(t, 10*time.Second, "the not-in-thread note", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if m.ParentID == "om_loose" && strings.Contains(m.Content, "thread") {
				return true
			}
		}
		return false
	})
}

// TestOldCardGetsFreshCardInThread: a card past Feishu's 14-day patch window is not
// patched; a fresh card goes into its thread and the issue moves to it.
func TestOldCardGetsFreshCardInThread(t *testing.T) {
	var mu sync.Mutex
	offset := time.Duration(0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return time.Now().Add(offset)
	}
	h := newHarness(t, "embedded", 18, time.Second, feishutest.WithNow(clock))
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("slow leak")
	// Feishu's clock is 15 days on: the platform refuses the patch; the bot posts anew.
	mu.Lock()
	offset = 15 * 24 * time.Hour
	mu.Unlock()
	h.gs.SetStatus(issue, 30)
	var fresh string
	waitFor(t, 30*time.Second, "a fresh card in the thread", func() bool {
		fresh = chatCard(h.record(issue)).MessageID
		return fresh != card
	})
	m, _ := h.fs.Message(fresh)
	if m.RootID != card || m.MsgType != "interactive" || !strings.Contains(m.Content, `"content":"Pending"`) {
		t.Errorf("fresh card: root %q type %q:\n%s", m.RootID, m.MsgType, m.Content)
	}
	if old, _ := h.fs.Message(card); len(old.Patches) != 0 {
		t.Errorf("the old card was patched %d times", len(old.Patches))
	}
	if got, err := h.st.IssueByMessage(t.Context(), fresh); err != nil || got.IssueUUID != issue {
		t.Errorf("fresh card maps to %q, %v", got.IssueUUID, err)
	}
	// Later changes patch the fresh card; nothing more is posted.
	mu.Lock()
	offset = 0
	mu.Unlock()
	h.gs.SetStatus(issue, 20)
	waitFor(t, 30*time.Second, "the fresh card patched", func() bool {
		return strings.Contains(h.cardContent(fresh), `"content":"Resolved"`)
	})
	if n := h.cardCount(); n != 2 {
		t.Errorf("%d cards, want 2", n)
	}
	// A click on the old card's buttons changes the issue, and the fresh card follows.
	h.gs.SetStatus(issue, 10)
	waitFor(t, 30*time.Second, "the fresh card showing Open", func() bool {
		return strings.Contains(h.cardContent(fresh), `"content":"Open"`)
	})
	h.fs.AddUser("ou_alice", "张三")
	in, err := feishu.NewIntake(feishu.IntakeConfig{Mode: feishu.ModeHTTP, EncryptKey: "ek", VerificationToken: h.fs.VerificationToken, Logger: h.logger()}, h.bot)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(in)
	defer hs.Close()
	status, _, err := h.fs.DeliverHTTP(t.Context(), hs.URL, h.fs.CardActionEvent(feishutest.CardActionSpec{
		MessageID: card, OperatorOpenID: "ou_alice", Value: buttonValue(t, h.cardContent(card), "resolve"),
	}), feishutest.HTTPOptions{EncryptKey: "ek"})
	if err != nil || status != 200 {
		t.Fatalf("click on the old card: %d %v", status, err)
	}
	waitFor(t, 30*time.Second, "the fresh card showing the old card's click", func() bool {
		c := h.cardContent(fresh)
		return strings.Contains(c, `"content":"Resolved"`) && strings.Contains(c, "张三")
	})
	// The bot's own clock: a record older than 14 days is re-carded without trying.
	h.ageCard(issue)
	h.gs.SetStatus(issue, 10)
	// The card is sent before the record moves to it: wait for both.
	var third string
	waitFor(t, 30*time.Second, "a third card, recorded", func() bool {
		third = chatCard(h.record(issue)).MessageID
		return h.cardCount() == 3 && third != fresh
	})
	if m, _ := h.fs.Message(third); third == fresh || m.RootID != card || !strings.Contains(m.Content, `"content":"Open"`) {
		t.Errorf("third card %s: root %q:\n%s", third, m.RootID, m.Content)
	}
}

// TestDeletedAndQuietIssues: an open issue deleted in Guance is found by the sweep and
// its card says so; a resolved issue quiet for QUIET_AFTER is no longer scanned, until
// it is reopened in Guance.
func TestDeletedAndQuietIssues(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.cfg.QuietAfter = 3 * time.Second
	h.start()
	h.bootstrapped()
	gone, goneCard := h.cardedIssue("temporary")
	quiet, quietCard := h.cardedIssue("done long ago")
	h.gs.DeleteIssue(gone)
	waitFor(t, 30*time.Second, "the card marked deleted", func() bool {
		return strings.Contains(h.cardContent(goneCard), `"content":"Deleted"`)
	})
	if strings.Contains(h.cardContent(goneCard), `"action":`) {
		t.Errorf("a deleted issue's card keeps its buttons")
	}
	h.gs.SetStatus(quiet, 20)
	waitFor(t, 30*time.Second, "the resolved card", func() bool {
		return strings.Contains(h.cardContent(quietCard), `"content":"Resolved"`)
	})
	// Once quiet, no more reply scans of it.
	deadline := time.Now().Add(h.cfg.QuietAfter + time.Second)
	waitFor(t, 20*time.Second, "the quiet period", func() bool { return time.Now().After(deadline) })
	count := func() int {
		n := 0
		for _, r := range h.gs.Requests() {
			if strings.Contains(r.Path, "/reply/"+quiet+"/list") {
				n++
			}
		}
		return n
	}
	before := count()
	later := time.Now().Add(3 * time.Second)
	waitFor(t, 20*time.Second, "three more seconds", func() bool { return time.Now().After(later) })
	if after := count(); after != before {
		t.Errorf("a quiet resolved issue was scanned %d more times", after-before)
	}
	// Reopened in Guance (with no other open issue watched): the sweep finds it, the
	// card follows and its replies reach the thread again.
	h.gs.SetStatus(quiet, 10)
	h.gs.AddHumanReply(quiet, "王五", "it is back")
	waitFor(t, 30*time.Second, "the reopened card", func() bool {
		return strings.Contains(h.cardContent(quietCard), `"content":"Open"`)
	})
	waitFor(t, 30*time.Second, "the reply after the reopen", func() bool { return len(h.guancePosts(quietCard)) == 1 })
}

// TestStatusCommandReports: @bot status answers with the bridge's health, the
// reply-sync bound included.
func TestStatusCommandReports(t *testing.T) {
	h := startReplyHarness(t, nil)
	h.cardedIssue("one")
	h.cardedIssue("two")
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	ev := h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_status", ChatID: testChat, SenderOpenID: "ou_alice",
		Content: feishutest.TextContent("@_user_1 status"), Mentions: []feishutest.Mention{bot}})
	if ack, err := h.fs.DeliverWS(t.Context(), ev); err != nil || ack.Code != 200 {
		t.Fatalf("deliver: %v %v", ack, err)
	}
	var text string
	waitFor(t, 10*time.Second, "the status report", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if m.ParentID == "om_status" {
				text = textOf(t, m.Content)
				return true
			}
		}
		return false
	})
	for _, want := range []string{"last poll:", "budget:", "store: embedded", "tracked 2", "watched 2", "oldest unscanned", "full round ≈", "queues: cards 0"} {
		if !strings.Contains(text, want) {
			t.Errorf("status report lacks %q:\n%s", want, text)
		}
	}
}

// TestThreadQueueKeepsIssueOrder: the thread queue orders an issue's replies by when
// they were written, then by the order a scan found them.
func TestThreadQueueKeepsIssueOrder(t *testing.T) {
	b := New(Config{}, nil, nil, nil, nil, nil)
	job := func(issue string, createAt, seq int64) *jobs.Job[threadJob] {
		return &jobs.Job[threadJob]{Payload: threadJob{IssueUUID: issue, CreateAt: createAt, Seq: seq}}
	}
	if k := b.thread.Key(threadJob{IssueUUID: "A"}); k != "A" {
		t.Errorf("key = %q, want the issue", k)
	}
	for _, tt := range []struct {
		x, y *jobs.Job[threadJob]
		want bool
	}{
		{job("A", 100, 2), job("A", 101, 1), true},
		{job("A", 101, 1), job("A", 100, 2), false},
		{job("A", 100, 1), job("A", 100, 2), true},
		{job("A", 100, 2), job("A", 100, 1), false},
	} {
		if got := b.thread.Less(tt.x, tt.y); got != tt.want {
			t.Errorf("Less(%+v, %+v) = %v, want %v", tt.x.Payload, tt.y.Payload, got, tt.want)
		}
	}
}

func TestBudgetArithmetic(t *testing.T) {
	for _, tt := range []struct{ limit, reserve int }{{1, 0}, {2, 1}, {3, 2}, {18, 2}, {20, 2}, {45, 5}, {200, 22}} {
		if got := Reserve(tt.limit); got != tt.reserve {
			t.Errorf("Reserve(%d) = %d, want %d", tt.limit, got, tt.reserve)
		}
	}
	b := New(Config{RateLimit: 18, PollInterval: 10 * time.Second}, nil, nil, nil, nil, nil)
	if b.pollEvery() != 12*time.Second || b.syncEvery() != 6*time.Second {
		t.Errorf("defaults: polls every %v, watcher every %v; want 12s and 6s (turns every 4 s: 5 polls + 10 watcher + 2 reserved + 1 spare per minute)", b.pollEvery(), b.syncEvery())
	}
	fast := New(Config{RateLimit: 18, PollInterval: 2 * time.Second}, nil, nil, nil, nil, nil)
	polls := time.Minute / fast.pollEvery()
	sync := time.Minute / fast.syncEvery()
	// Both hungry: the poll and the watcher share the turns equally; neither starves.
	if polls+sync+time.Duration(Reserve(18)) > 17 || sync != polls {
		t.Errorf("POLL_INTERVAL=2s: %d polls + %d watcher + %d reserved per minute, want an equal share of 15", polls, sync, Reserve(18))
	}
	// 150 open issues: 2 list pages per sweep every 30 s, 10 watcher requests a minute.
	if c := b.scanCycle(150, 150); c < 20*time.Minute || c > 30*time.Minute {
		t.Errorf("scan cycle for 150 issues = %v, want about 25 min", c)
	}
}

// TestScanDoesNotStopAtTheBotsOwnNewerReply: the bot's own replies are marked seen as
// it writes them; a human reply written just before one of them must still be found.
func TestScanDoesNotStopAtTheBotsOwnNewerReply(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	h := newHarness(t, "embedded", 18, time.Second)
	h.gs.Now = now                                     // before the first request
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger()) // not running: the test drives it
	b.now = now
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: "race"})
	sent, err := h.fc.SendCard(t.Context(), testChat, cards.Help(), "")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := h.gc.GetIssue(guance.WithPriority(t.Context(), guance.PriorityHigh), is.UUID)
	if err != nil {
		t.Fatal(err)
	}
	rec := storeIssue(*parsed)
	rec.Cards = []store.Card{{ChatID: testChat, MessageID: sent.MessageID, SentAt: now(), PatchedRevision: 1}}
	if err := h.st.PutIssue(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	scan := func() {
		t.Helper()
		rec, err := h.st.GetIssue(t.Context(), is.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.scanReplies(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}
	scan() // the baseline
	advance(10 * time.Second)
	human := h.gs.AddHumanReply(is.UUID, "王五", "written in Guance")
	advance(5 * time.Second)
	mine, err := h.gc.CreateReply(guance.WithPriority(t.Context(), guance.PriorityHigh), is.UUID, "[飞书] 张三: from the chat")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.AddOwnReply(t.Context(), is.UUID, mine.UUID); err != nil { // as replyDone does
		t.Fatal(err)
	}
	scan()
	jobs, err := h.st.DueJobs(t.Context(), queueThread, now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ID != human.UUID {
		t.Errorf("thread jobs = %v, want the human reply %s only", jobs, human.UUID)
	}
	// A later scan finds nothing more, and stops before the old replies.
	before := len(h.gs.Requests())
	scan()
	if jobs, _ := h.st.DueJobs(t.Context(), queueThread, now().Add(time.Hour), 0); len(jobs) != 1 {
		t.Errorf("a repeated scan queued %d jobs", len(jobs))
	}
	if n := len(h.gs.Requests()) - before; n != 1 {
		t.Errorf("a scan with nothing new made %d requests, want 1", n)
	}
}

// TestClickDoesNotUndoAConsoleChange: a status changed in the Guance console that the
// bot has not noticed yet is not undone by a click on the card that still shows the
// old status; the click answers with the current state.
func TestClickDoesNotUndoAConsoleChange(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.intake = true
	h.cfg.PollInterval = 10 * time.Second // the watcher is slow: the record lags the console
	h.fs.AddUser("ou_alice", "张三")
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("console race")
	open := h.cardContent(card)
	h.gs.SetStatus(issue, 20) // resolved in the console
	ack, _ := h.click(card, "ou_alice", buttonValue(t, open, "pending"))
	if !strings.Contains(string(ack.Data), `"warning"`) || !strings.Contains(string(ack.Data), "Resolved") {
		t.Errorf("answer = %s", ack.Data)
	}
	if is, _ := h.gs.Issue(issue); is.StatusType != 20 {
		t.Errorf("the click changed the status to %d", is.StatusType)
	}
	if n := len(h.gs.ModifyBodies()); n != 0 {
		t.Errorf("%d modify calls, want none", n)
	}
}

// TestHeldRepliesWaitForTheKey: while the bot does not know its key's id, replies
// written with an API key are held, not posted and not lost; once a write of its own
// tells the id, another key's replies are posted.
func TestHeldRepliesWaitForTheKey(t *testing.T) {
	h := startReplyHarness(t, nil)
	issue, card := h.cardedIssue("relay")
	h.gs.AddHumanReply(issue, "wsak_dingtalk", "[钉钉] 赵六: held")
	waitFor(t, 30*time.Second, "the reply held", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueHeld)
		return err == nil && n == 1
	})
	if n := len(h.guancePosts(card)); n != 0 {
		t.Fatalf("%d posts before the key was known", n)
	}
	if ack, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_k", card, "收到")); err != nil || ack.Code != 200 {
		t.Fatalf("deliver: %v %v", ack, err)
	}
	waitFor(t, 30*time.Second, "the held reply in the thread", func() bool { return len(h.guancePosts(card)) == 1 })
	if n, _ := h.st.CountJobs(t.Context(), queueHeld); n != 0 {
		t.Errorf("%d replies still held", n)
	}
	h.scannedTwice(issue)
	if posts := h.guancePosts(card); len(posts) != 1 || !strings.Contains(posts[0].Content, "held") {
		t.Errorf("posts = %v, want the held reply only (not the bot's own)", posts)
	}
}

func TestThreadPostCannotMention(t *testing.T) {
	b := New(Config{Location: time.UTC}, nil, nil, nil, nil, nil)
	post := b.threadPost(threadJob{Author: `x<at user_id="ou_1">`, CreateAt: 0,
		Text: `ping <at user_id="all">所有人</at> and <AT id=ou_2></AT> but not <atlas>`})
	if strings.Contains(strings.ToLower(post), "<at ") || strings.Contains(strings.ToLower(post), "</at>") {
		t.Errorf("post keeps a mention tag: %q", post)
	}
	if !strings.Contains(post, "<atlas>") {
		t.Errorf("post changed text that is no mention: %q", post)
	}
}

// TestRecalledCardRepliesGoToTheChat: when someone recalled an issue's card, Guance
// replies still reach the chat, as messages naming the issue.
func TestRecalledCardRepliesGoToTheChat(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("recalled card")
	h.fs.Recall(card)
	h.gs.SetStatus(issue, 30) // a patch of the recalled card fails once and is given up
	h.gs.AddHumanReply(issue, "王五", "still reaches the chat")
	waitFor(t, 30*time.Second, "the reply in the chat", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if m.MsgType == "text" && m.RootID == "" && strings.Contains(m.Content, "still reaches the chat") &&
				strings.Contains(m.Content, "recalled card") {
				return true
			}
		}
		return false
	})
	waitFor(t, 20*time.Second, "the status change and the reply counted", func() bool {
		r := h.record(issue)
		return r.StatusType == 30 && r.SyncedReplies == 1
	})
	// Each revision's patch is tried once, refused (the message is gone), and given up.
	patches := func() int {
		n := 0
		for _, r := range h.fs.Requests() {
			if r.Method == "PATCH" && strings.HasSuffix(r.Path, "/messages/"+card) {
				n++
			}
		}
		return n
	}
	h.settled(issue) // the last revision's patch tried, and given up
	before := patches()
	deadline := time.Now().Add(3*patchEvery + time.Second)
	waitFor(t, 10*time.Second, "three patch intervals", func() bool { return time.Now().After(deadline) })
	// A restart does not try the gone card again.
	h.terminate()
	h.start()
	h.bootstrapped()
	h.quiet(2)
	n, err := h.patchesDue()
	if rev, after := h.record(issue).CardRevision, patches(); after != before || after < 1 || after > int(rev-1) || n != 0 || err != nil {
		t.Errorf("the recalled card: %d patches, then %d more, %d still queued (%v); want 1 to %d (one per new revision), then none",
			before, after-before, n, err, rev-1)
	}
}

// TestThreadPostGivenUp: a Guance reply that cannot reach the chat (the bot was taken
// out of it) is retried, then given up once threadGiveUpAfter old, with an error log
// and a metric, and the issue's later replies are no longer held behind it.
func TestThreadPostGivenUp(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("unpostable")
	h.fs.RemoveChat(testChat)
	h.gs.AddHumanReply(issue, "王五", "nowhere to go")
	var job store.Job
	waitFor(t, 30*time.Second, "a failed thread post, rescheduled", func() bool {
		jobs, err := h.st.DueJobs(t.Context(), queueThread, time.Now().Add(time.Hour), 0)
		if err != nil || len(jobs) != 1 || jobs[0].Attempts == 0 {
			return false
		}
		job = jobs[0]
		return true
	})
	if wait := time.Until(job.NotBefore); wait < 5*time.Minute {
		t.Errorf("bot not in the chat: next try in %v, want the ten-minute pace", wait)
	}
	// Fast-forward: the reply is eight hours old, and the job due.
	var p threadJob
	if err := json.Unmarshal(job.Payload, &p); err != nil {
		t.Fatal(err)
	}
	p.CreateAt = time.Now().Add(-threadGiveUpAfter).Unix()
	payload, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	job.Payload, job.NotBefore = payload, time.Now()
	if err := h.st.PutJob(t.Context(), queueThread, job); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the post given up", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueThread)
		return err == nil && n == 0
	})
	var m dto.Metric
	if err := h.bot.metrics.threadDrops.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("issuebot_thread_posts_dropped_total = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "given up there") || !strings.Contains(logs, "level=ERROR") {
		t.Error("no error log for the dropped reply")
	}
	h.fs.AddChat(testChat)
	h.gs.AddHumanReply(issue, "王五", "after the gap")
	waitFor(t, 60*time.Second, "the later reply in the thread", func() bool {
		return len(h.guancePosts(card)) == 1
	})
	if got := textOf(t, h.guancePosts(card)[0].Content); !strings.Contains(got, "after the gap") {
		t.Errorf("posted %q", got)
	}
}

// TestSameSecondDataDoesNotUndoAClick: Guance's updateAt has whole seconds, so a list
// row asked for before the bot's own status change was recorded, carrying the same
// updateAt, may show the issue from before the change. It is not applied over the
// change; the issue is read again instead. The same row asked for later is applied (a
// change made in Guance within that second).
func TestSameSecondDataDoesNotUndoAClick(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	ctx := t.Context()
	added := h.gs.AddIssue(guancetest.IssueSpec{Name: "same second"})
	got, err := h.gc.GetIssue(guance.WithPriority(ctx, guance.PriorityHigh), added.UUID)
	if err != nil {
		t.Fatal(err)
	}
	is := *got
	if err := h.st.PutIssue(ctx, store.Issue{IssueUUID: is.UUID,
		Cards:        []store.Card{{ChatID: testChat, MessageID: "om_card", PatchedRevision: 1, SentAt: time.Now()}},
		CardRevision: 1, UpdateAt: is.UpdateAt.Unix(), StatusType: int(is.StatusType),
		Level: string(is.Level), Name: is.Name}); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	row := is // the list row, read just before the click
	if _, err := b.applyStatus(ctx, statusJob{IssueUUID: is.UUID, Target: guance.StatusResolved, Action: "resolve",
		Expect: is.StatusType, Who: "张三", At: time.Now()}, "om_card"); err != nil {
		t.Fatal(err)
	}
	after := h.record(is.UUID)
	row.UpdateAt = guance.Time(after.UpdateAt) // the same second as the click's change
	if err := b.observe(ctx, row, asked); err != nil {
		t.Fatal(err)
	}
	if got := h.record(is.UUID); got.StatusType != int(guance.StatusResolved) || !got.Refresh ||
		got.CardRevision != after.CardRevision {
		t.Errorf("a row asked for before the click: status %d, refresh %v, revision %d→%d; want Resolved kept, a re-read",
			got.StatusType, got.Refresh, after.CardRevision, got.CardRevision)
	}
	if err := b.observe(ctx, row, time.Now().Add(ownWriteMargin)); err != nil {
		t.Fatal(err)
	}
	if got := h.record(is.UUID); got.StatusType != int(row.StatusType) || got.Refresh || got.CardRevision != after.CardRevision+1 {
		t.Errorf("the row asked for later: status %d, refresh %v, revision %d; want it applied", got.StatusType, got.Refresh, got.CardRevision)
	}
}

// TestQueuedClickDoesNotUndoAConsoleChange: a click queued while Guance was busy is made
// later; if the issue was changed in Guance meanwhile (and the bot has not seen it
// yet), the queued change is dropped and the card shows Guance's status.
func TestQueuedClickDoesNotUndoAConsoleChange(t *testing.T) {
	h, b, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "queued click"}).UUID
	carded(t, h, issue, time.Now())
	payload, err := json.Marshal(statusJob{IssueUUID: issue, Target: guance.StatusResolved, Action: "resolve",
		Expect: guance.StatusOpen, Who: "张三", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	job := store.Job{ID: "status-" + issue, Payload: payload, NotBefore: time.Now()}
	if err := h.st.PutJob(t.Context(), queueStatus, job); err != nil {
		t.Fatal(err)
	}
	h.gs.SetStatus(issue, int(guance.StatusPending)) // in the console, before the job runs
	if err := b.status.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if bodies := h.gs.ModifyBodies(); len(bodies) != 0 {
		t.Errorf("modify calls %q; want none", bodies)
	}
	if rec := h.record(issue); rec.StatusType != int(guance.StatusPending) || rec.CardRevision != 2 {
		t.Errorf("record: status %d revision %d; want Pending on the card's next revision", rec.StatusType, rec.CardRevision)
	}
	if n, err := h.st.CountJobs(t.Context(), queueStatus); err != nil || n != 0 {
		t.Errorf("%d status jobs left (%v)", n, err)
	}
}

// TestRecalledOldCardIsGivenUp: an issue whose card is past the 14-day window and was
// recalled gets no fresh card (there is no thread to post it in); its change counts as
// done instead of being retried every ten minutes.
func TestRecalledOldCardIsGivenUp(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("old and recalled")
	h.fs.Recall(card)
	h.ageCard(issue)
	h.gs.SetStatus(issue, 30)
	waitFor(t, 30*time.Second, "the change seen", func() bool { return h.record(issue).StatusType == 30 })
	h.settled(issue) // given up, not retried
	if n := h.cardCount(); n != 1 {
		t.Errorf("%d cards, want the recalled one only", n)
	}
}

// TestBrokenIssueBacksOff: an issue whose Guance requests keep failing is left alone
// for a window, then two, four… (up to 32), so it cannot take the watcher's budget from
// the others; a success or a throttle does not count against it.
func TestBrokenIssueBacksOff(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Minute)
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	now := t0
	b.now = func() time.Time { return now }
	broken := errors.New("decode issue: unexpected EOF")
	for n, want := range []time.Duration{1, 2, 4, 8, 16, 32, 32} {
		now = t0
		b.noteFailure("issue_x", broken)
		if !b.recentlyFailed("issue_x", t0.Add(want*time.Minute-time.Second)) || b.recentlyFailed("issue_x", t0.Add(want*time.Minute)) {
			t.Errorf("after %d failures: want it left alone for %v", n+1, want*time.Minute)
		}
	}
	b.noteFailure("issue_x", fmt.Errorf("list: %w", guance.ErrThrottled))
	if b.recentlyFailed("issue_x", t0.Add(32*time.Minute)) {
		t.Error("a throttle counted as the issue's failure")
	}
	b.noteFailure("issue_y", fmt.Errorf("get: %w", &guance.Error{StatusCode: http.StatusServiceUnavailable}))
	if b.recentlyFailed("issue_y", t0) {
		t.Error("a 503 (Guance's outage) counted as the issue's failure: the issue would wait a window")
	}
	b.noteSuccess("issue_x")
	if b.recentlyFailed("issue_x", t0) {
		t.Error("still left alone after a success")
	}
}

// TestLateClickAnswerPatchesTheCard: when a click's answer leaves after Feishu stopped
// waiting (a slow store, say), the card is not taken to show it: a patch is queued.
func TestLateClickAnswerPatchesTheCard(t *testing.T) {
	h, _, _ := scanHarness(t)
	var late atomic.Bool
	cs := &countingStore{Store: h.st, onUpdate: func() { late.Store(true) }}
	b := New(h.cfg, h.fc, h.gc, cs, nil, h.logger())
	b.now = func() time.Time {
		if late.Load() {
			return time.Now().Add(answerDeadline + time.Second)
		}
		return time.Now()
	}
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "slow answer"}).UUID
	rec := carded(t, h, issue, time.Now())
	resp, err := b.HandleCardAction(t.Context(), feishu.CardAction{EventID: "ev_late", OperatorOpenID: "ou_alice",
		MessageID: chatCard(rec).MessageID, ChatID: testChat, EventTime: time.Now(),
		Value: map[string]any{"action": "resolve", "issue": issue, "rev": float64(1), "st": float64(10)}})
	if err != nil || resp.Toast == nil || resp.Toast.Type != "success" {
		t.Fatalf("answer %+v, %v", resp, err)
	}
	got := h.record(issue)
	n, err := h.patchesDue()
	if got.StatusType != 20 || chatCard(got).PatchedRevision >= got.CardRevision || err != nil || n != 1 {
		t.Errorf("after a late answer: status %d, revision %d shown of %d, %d patches queued (%v); want a patch queued",
			got.StatusType, chatCard(got).PatchedRevision, got.CardRevision, n, err)
	}
}

// TestReportNamesTheBudgetScope: with Redis the budget is shared by the replicas, and
// the report says its count is this replica's.
func TestReportNamesTheBudgetScope(t *testing.T) {
	for store, want := range map[string]bool{"redis": true, "embedded": false} {
		text := Report{Store: store, BudgetUsed: 3, BudgetLimit: 18, BudgetWindow: time.Minute}.Text(time.Now())
		if got := strings.Contains(text, "budget: 3 / 18 每 / per 1m0s，本副本 / this replica"); got != want {
			t.Errorf("%s store: this-replica note %v, want %v:\n%s", store, got, want, text)
		}
	}
}

// TestCorruptSnapshotIsReadAgain: a stored snapshot that does not decode is not
// silently rendered as a card without a description: it is logged and the issue is
// flagged to be read again from Guance.
func TestCorruptSnapshotIsReadAgain(t *testing.T) {
	h, b, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "corrupt snapshot"}).UUID
	carded(t, h, issue, time.Now())
	rec, err := h.st.UpdateIssue(t.Context(), issue, func(r *store.Issue) error {
		r.Snapshot = json.RawMessage(`{"issue":5}`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.recordCard(t.Context(), rec, chatCard(rec)); err != nil {
		t.Fatalf("recordCard: %v", err)
	}
	if !strings.Contains(h.logs.String(), "snapshot is unreadable") {
		t.Error("the unreadable snapshot was not logged")
	}
	if !h.record(issue).Refresh {
		t.Error("the issue was not flagged to be read again")
	}
	if _, err := b.syncStep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.record(issue); got.Refresh || len(got.Snapshot) == 0 || json.Unmarshal(got.Snapshot, &snapshotData{}) != nil {
		t.Errorf("after the watcher's step: refresh %v, snapshot %s; want a good snapshot", got.Refresh, got.Snapshot)
	}
}

// TestRereadIssueStaysInTheSweep: an open issue read again for a reason other than a
// sweep missing it (a change entry in its replies, say) is not taken for one the list
// never shows: when it is resolved later, the next sweep still misses it and flags it.
func TestRereadIssueStaysInTheSweep(t *testing.T) {
	h, b, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "re-read"}).UUID
	carded(t, h, issue, time.Now())
	rec, err := h.st.UpdateIssue(t.Context(), issue, func(r *store.Issue) error { r.Refresh = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.refreshIssue(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	h.gs.SetStatus(issue, int(guance.StatusResolved))
	rec = h.record(issue)
	if err := b.sweepPage(t.Context(), time.Unix(rec.CreateAt, 0), []*store.Summary{new(rec.Summary())}); err != nil {
		t.Fatal(err)
	}
	if !h.record(issue).Refresh {
		t.Error("the sweep did not flag the resolved issue it no longer lists")
	}
}

// TestQuietCardSaysItsButtonsExpire: a day before Feishu stops taking a card's buttons,
// a card that nothing changed is patched to say so and what to do after.
func TestQuietCardSaysItsButtonsExpire(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("quiet for 13 days")
	sent := time.Now().Add(-(patchMaxAge - expiryLead) - time.Minute)
	if _, err := h.st.UpdateIssue(t.Context(), issue, func(r *store.Issue) error { r.Cards[0].SentAt = sent; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.bot.queueExpiry(t.Context(), issue, testChat, sent); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the expiry note on the card", func() bool {
		m, ok := h.fs.Message(card)
		return ok && len(m.Patches) > 0 && strings.Contains(m.Patches[len(m.Patches)-1], "按钮将于")
	})
	h.settled(issue)
}
