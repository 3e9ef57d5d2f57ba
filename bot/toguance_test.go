package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
)

// cardedIssue adds an issue to Guance and waits for its card; it returns the issue
// uuid and the card's message id.
func (h *harness) cardedIssue(name string) (string, string) {
	h.t.Helper()
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: name})
	var msg string
	waitFor(h.t, 40*time.Second, "the card of "+name, func() bool {
		rec, err := h.st.GetIssue(context.Background(), is.UUID)
		msg = chatCard(rec).MessageID
		return err == nil && msg != ""
	})
	// The record is written before the card's job is removed.
	waitFor(h.t, 10*time.Second, "the card job of "+name+" done", func() bool {
		jobs, err := h.st.DueJobs(context.Background(), queueCards, time.Now().Add(24*time.Hour), 0)
		if err != nil {
			return false
		}
		for _, j := range jobs {
			if j.ID == cardJobID(is.UUID, testChat) {
				return false
			}
		}
		return true
	})
	return is.UUID, msg
}

// humanReplies returns the contents of the replies the bot's key wrote on an issue.
func (h *harness) botReplies(issueUUID string) []string {
	var out []string
	for _, r := range h.gs.Replies(issueUUID) {
		if r.Type == "reply" && r.Creator == h.gs.KeyID {
			out = append(out, r.Content)
		}
	}
	return out
}

func threadReply(fs *feishutest.Server, msgID, cardID, text string, mentions ...feishutest.Mention) []byte {
	return fs.MessageEvent(feishutest.MessageSpec{
		MessageID: msgID, RootID: cardID, ChatID: testChat, SenderOpenID: "ou_alice",
		Content: feishutest.TextContent(text), Mentions: mentions,
	})
}

// TestThreadReplyReachesGuanceOnce: a thread reply with a person mentioned arrives in
// Guance once, with the sender's and the mention's names, the message gets a
// reaction; three deliveries (new event ids) make one reply; "//" stays in the chat.
// Over the long connection and over signed HTTP alike.
func TestThreadReplyReachesGuanceOnce(t *testing.T) {
	for _, mode := range []string{"ws", "http"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, "embedded", 18, time.Second)
			h.fs.AddUser("ou_alice", "张三")
			var deliver func(payload []byte) int
			if mode == "ws" {
				h.intake = true
				h.start()
				deliver = func(p []byte) int {
					ack, err := h.fs.DeliverWS(t.Context(), p)
					if err != nil {
						t.Fatal(err)
					}
					return ack.Code
				}
			} else {
				b := h.start()
				in, err := feishu.NewIntake(feishu.IntakeConfig{Mode: feishu.ModeHTTP, EncryptKey: "ek-SECRET", VerificationToken: h.fs.VerificationToken, Logger: h.logger()}, b)
				if err != nil {
					t.Fatal(err)
				}
				hs := httptest.NewServer(in)
				defer hs.Close()
				deliver = func(p []byte) int {
					status, _, err := h.fs.DeliverHTTP(t.Context(), hs.URL, p, feishutest.HTTPOptions{EncryptKey: "ek-SECRET"})
					if err != nil {
						t.Fatal(err)
					}
					return status
				}
				// Forged, stale and unencrypted requests are refused and post nothing.
				issue, card := h.cardedIssue("forgery target")
				for _, o := range []feishutest.HTTPOptions{
					{EncryptKey: "ek-SECRET", BadSignature: true},
					{EncryptKey: "ek-SECRET", Timestamp: time.Now().Add(-10 * time.Minute)},
					{EncryptKey: "ek-SECRET", Plain: true},
				} {
					status, _, err := h.fs.DeliverHTTP(t.Context(), hs.URL, threadReply(h.fs, fmt.Sprintf("om_forged_%v", o), card, "forged"), o)
					if err != nil || status < 400 {
						t.Errorf("forged request %+v answered %d, %v", o, status, err)
					}
				}
				defer func() {
					if got := h.botReplies(issue); len(got) != 0 {
						t.Errorf("forged requests posted %q", got)
					}
				}()
			}
			h.bootstrapped()
			issue, card := h.cardedIssue("db-1 down")

			payload := func() []byte {
				return threadReply(h.fs, "om_reply1", card, "@_user_1 已重启 db-1 @_user_2",
					feishutest.Mention{Key: "@_user_1", OpenID: "ou_bob", Name: "李四"},
					feishutest.Mention{Key: "@_user_2", OpenID: h.fs.BotOpenID, Name: h.fs.BotName})
			}
			for i := range 3 { // a new event id each time
				start := time.Now()
				if code := deliver(payload()); code != 200 {
					t.Fatalf("delivery %d acked %d", i, code)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("delivery %d took %v to ack", i, d)
				}
			}
			if code := deliver(threadReply(h.fs, "om_private", card, "// just between us")); code != 200 {
				t.Fatalf("private remark acked %d", code)
			}
			want := "[飞书] 张三: @李四 已重启 db-1"
			waitFor(t, 20*time.Second, "the Guance reply", func() bool { return len(h.botReplies(issue)) >= 1 })
			waitFor(t, 10*time.Second, "the reaction", func() bool {
				m, _ := h.fs.Message("om_reply1")
				return len(m.Reactions) == 1
			})
			h.quietReplies()
			if got := h.botReplies(issue); len(got) != 1 || got[0] != want {
				t.Errorf("Guance replies = %q, want [%q]", got, want)
			}
			if m, _ := h.fs.Message("om_reply1"); len(m.Reactions) != 1 || m.Reactions[0] != "DONE" {
				t.Errorf("reactions on the message = %v, want [DONE]", m.Reactions)
			}
			for _, r := range h.gs.Replies(issue) {
				if r.Creator == h.gs.KeyID && r.Type == "reply" {
					if own, err := h.st.IsOwnReply(context.Background(), r.UUID); err != nil || !own {
						t.Errorf("reply %s not recorded as the bot's own (%v, %v)", r.UUID, own, err)
					}
				}
			}
		})
	}
}

// quietReplies waits until no reply is queued.
func (h *harness) quietReplies() {
	h.t.Helper()
	waitFor(h.t, 30*time.Second, "an empty reply queue", func() bool {
		n, err := h.st.CountJobs(context.Background(), queueReplies)
		return err == nil && n == 0
	})
}

// TestRepliesSurviveThrottlingAndRestarts: Guance throttles the bot while 10 thread
// replies arrive; a SIGTERM restart and a kill just after Guance accepted a reply
// (before it was recorded) happen in between. All 10 land exactly once.
func TestRepliesSurviveThrottlingAndRestarts(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, kind, 18, time.Second)
			h.intake = true
			h.fs.AddUser("ou_alice", "张三")
			h.start()
			h.bootstrapped()
			issue, card := h.cardedIssue("flapping")

			h.gs.ThrottleFor(3 * time.Second) // three budget windows: "90 s" at this scale
			send := func(i int) {
				// Feishu delivers again (new event id) until the bot acks with 200.
				for try := 0; ; try++ {
					ack, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, fmt.Sprintf("om_r%02d", i), card, fmt.Sprintf("update %d", i)))
					if err != nil {
						t.Fatal(err)
					}
					if ack.Code == 200 {
						return
					}
					if try == 5 {
						t.Fatalf("message %d never acked: %d", i, ack.Code)
					}
				}
			}
			for i := range 5 {
				send(i)
			}
			h.terminate()
			h.start()
			for i := 5; i < 10; i++ {
				send(i)
			}
			// Kill right after Guance accepts the next reply, before it is recorded.
			h.terminate()
			accepted := make(chan string, 1)
			h.start(func(b *Bot) { b.afterReply = h.crashOnce(accepted) })
			select {
			case <-accepted:
			case <-time.After(30 * time.Second):
				t.Fatal("no reply was accepted after throttling ended")
			}
			h.kill()
			h.start()
			waitFor(t, 30*time.Second, "10 replies", func() bool { return len(h.botReplies(issue)) >= 10 })
			h.quietReplies()
			got := h.botReplies(issue)
			count := map[string]int{}
			for _, c := range got {
				count[c]++
			}
			for i := range 10 {
				want := fmt.Sprintf("[飞书] 张三: update %d", i)
				if count[want] != 1 {
					t.Errorf("reply %q posted %d times", want, count[want])
				}
			}
			if len(got) != 10 {
				t.Errorf("%d replies in Guance, want 10: %q", len(got), got)
			}
			if h.gs.Throttled() == 0 {
				t.Error("Guance never throttled; the test did not exercise recovery")
			}
		})
	}
}

// TestMessagesOutsideThreadsAreIgnored: a message in an unrelated chat or thread that
// does not mention the bot posts nothing and gets no answer; @bot help answers with a
// help card; #issue_uuid#text posts to that issue from anywhere.
func TestMessagesOutsideThreadsAreIgnored(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.intake = true
	h.fs.AddUser("ou_alice", "张三")
	h.fs.AddChat("oc_other")
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("compat target")
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	events := [][]byte{
		// Another bot's post in the card's thread is not a person's reply.
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_otherbot", ChatID: testChat, RootID: card, SenderOpenID: "ou_deploybot",
			SenderType: "bot", Content: feishutest.TextContent("deploy finished")}),
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_chatter", ChatID: "oc_other", SenderOpenID: "ou_alice", Content: feishutest.TextContent("lunch?")}),
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_help", ChatID: "oc_other", SenderOpenID: "ou_alice", Content: feishutest.TextContent("@_user_1 help"), Mentions: []feishutest.Mention{bot}}),
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_compat", ChatID: "oc_other", SenderOpenID: "ou_alice",
			Content: feishutest.TextContent("@_user_1 #" + issue + "#已处理"), Mentions: []feishutest.Mention{bot}}),
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_self", ChatID: testChat, SenderOpenID: h.fs.BotOpenID, SenderType: "app", Content: feishutest.TextContent("@_user_1 help"), Mentions: []feishutest.Mention{bot}}),
	}
	for _, e := range events {
		if ack, err := h.fs.DeliverWS(t.Context(), e); err != nil || ack.Code != 200 {
			t.Fatalf("deliver: %v %v", ack, err)
		}
	}
	waitFor(t, 20*time.Second, "the compat reply", func() bool { return len(h.botReplies(issue)) == 1 })
	waitFor(t, 10*time.Second, "the help card", func() bool {
		for _, m := range h.fs.Messages("oc_other") {
			if m.MsgType == "interactive" && m.ParentID == "om_help" {
				return true
			}
		}
		return false
	})
	h.quietReplies()
	waitFor(t, 10*time.Second, "every answer sent", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueAnswers)
		return err == nil && n == 0
	})
	if got := h.botReplies(issue); len(got) != 1 || got[0] != "[飞书] 张三: 已处理" {
		t.Errorf("compat replies = %q", got)
	}
	for _, m := range h.fs.Messages("oc_other") {
		if m.ParentID == "om_chatter" {
			t.Errorf("the bot answered unrelated chatter: %+v", m)
		}
	}
	for _, m := range h.fs.Messages(testChat) {
		if m.ParentID == "om_self" {
			t.Errorf("the bot answered its own message")
		}
	}
}

// TestRefusedReplyIsReported: when Guance refuses a reply for good (the issue was
// deleted), the thread gets a short bilingual note and nothing is retried.
func TestRefusedReplyIsReported(t *testing.T) {
	h := startReplyHarness(t, nil)
	issue, card := h.cardedIssue("soon deleted")
	h.gs.DeleteIssue(issue)
	if _, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_late", card, "anyone?")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the note in the thread", func() bool { return h.threadNotes(card, "Guance Issue") == 1 })
	h.quietReplies()
	if got := h.threadNotes(card, "Guance Issue"); got != 1 {
		t.Errorf("refusal notes = %d, want 1", got)
	}
	if got := h.botReplies(issue); len(got) != 0 {
		t.Errorf("a refused reply was posted after all: %q", got)
	}
}

// TestUnreachableGuanceIsReportedOnceAndRetried: while Guance is down the reply keeps
// being retried; after a few attempts the thread gets one bilingual note; when Guance
// is back the reply lands once.
func TestUnreachableGuanceIsReportedOnceAndRetried(t *testing.T) {
	h := startReplyHarness(t, func(h *harness) { h.cfg.RetryBase = 10 * time.Millisecond })
	issue, card := h.cardedIssue("guance outage")
	h.gs.Down(true)
	if _, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_wait", card, "still there?")); err != nil {
		t.Fatal(err)
	}
	notes := func() int { return h.threadNotes(card, "unavailable") }
	waitFor(t, 20*time.Second, "the delay note", func() bool { return notes() == 1 })
	h.gs.Down(false)
	waitFor(t, 20*time.Second, "the reply", func() bool { return len(h.botReplies(issue)) == 1 })
	h.quietReplies()
	if got := notes(); got != 1 {
		t.Errorf("delay notes = %d, want 1", got)
	}
	if got := h.botReplies(issue); len(got) != 1 || got[0] != "[飞书] 张三: still there?" {
		t.Errorf("replies = %q", got)
	}
}

// TestIdenticalMessagesMakeTwoReplies: two messages with the same text are two
// replies, even when the second's first attempt fails in a way that leaves its outcome
// unknown (the recovery must not adopt the first message's reply).
func TestIdenticalMessagesMakeTwoReplies(t *testing.T) {
	h := startReplyHarness(t, func(h *harness) { h.cfg.RetryBase = 10 * time.Millisecond })
	issue, card := h.cardedIssue("ack twice")
	if _, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_ack1", card, "收到")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the first reply", func() bool { return len(h.botReplies(issue)) == 1 })
	h.quietReplies()
	// The next reply/create fails with a 5xx: whether Guance created it is unknown.
	var failed atomic.Bool
	h.gs.Fail = func(r *http.Request) (int, string, bool) {
		if strings.HasSuffix(r.URL.Path, "/issue/reply/create") && failed.CompareAndSwap(false, true) {
			return 503, `{"code":503,"content":null,"errorCode":"InternalError","message":"busy","success":false,"traceId":"t"}`, true
		}
		return 0, "", false
	}
	if _, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_ack2", card, "收到")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the second reply", func() bool { return len(h.botReplies(issue)) == 2 })
	h.quietReplies()
	if got := h.botReplies(issue); len(got) != 2 {
		t.Errorf("replies = %q, want two", got)
	}
	if !failed.Load() {
		t.Error("the second reply never met the 5xx; the test did not exercise recovery")
	}
}

// startReplyHarness starts a bot with a long-connection intake on the embedded store,
// after setup adjusts the harness, and waits for its first poll.
func startReplyHarness(t *testing.T, setup func(*harness)) *harness {
	t.Helper()
	h := newHarness(t, "embedded", 18, time.Second)
	h.intake = true
	h.fs.AddUser("ou_alice", "张三")
	if setup != nil {
		setup(h)
	}
	h.start()
	h.bootstrapped()
	return h
}

// threadNotes counts the bot's text messages in a card's thread that contain substr.
// Inside a thread every reply hangs off the thread's root, the card.
func (h *harness) threadNotes(card, substr string) int {
	n := 0
	for _, m := range h.fs.Messages(testChat) {
		if m.RootID == card && m.MsgType == "text" && strings.Contains(m.Content, substr) {
			n++
		}
	}
	return n
}

// TestReplyToACardNotYetRecordedIsKept: a thread reply and a click that arrive after the
// card was posted and before it was recorded (its sender was slow, or killed between
// the two) are not dropped: they wait for the record and then reach Guance. A message
// in a thread that is no card's is still ignored.
func TestReplyToACardNotYetRecordedIsKept(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.fs.AddUser("ou_alice", "张三")
	h.intake = true
	release := make(chan struct{})
	h.start(func(b *Bot) {
		b.afterSend = func(string) error {
			select {
			case <-release:
			case <-h.ctx.Done():
			}
			return nil
		}
	})
	h.bootstrapped()
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "slow record"}).UUID
	var card string
	waitFor(t, 40*time.Second, "the card posted", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if m.MsgType == "interactive" && m.RootID == "" {
				card = m.ID
				return true
			}
		}
		return false
	})
	if _, err := h.st.GetIssue(t.Context(), issue); err == nil {
		t.Fatal("the card is recorded already; the test cannot play the gap")
	}
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	for _, e := range [][]byte{
		threadReply(h.fs, "om_early", card, "已在处理"),
		// A text command there cannot wait for the record like a reply: it is answered.
		threadReply(h.fs, "om_early_cmd", card, "@_user_1 resolve", bot),
		h.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_other_thread", RootID: "om_not_a_card", ChatID: testChat,
			SenderOpenID: "ou_alice", Content: feishutest.TextContent("lunch?")}),
	} {
		if ack, err := h.fs.DeliverWS(t.Context(), e); err != nil || ack.Code != 200 {
			t.Fatalf("deliver: %v %v", ack, err)
		}
	}
	// A click on the unrecorded card is not answered "unknown" and lost: it is queued.
	resp, err := h.bot.HandleCardAction(t.Context(), feishu.CardAction{EventID: "ev_early", OperatorOpenID: "ou_alice",
		MessageID: card, ChatID: testChat, EventTime: time.Now(),
		Value: map[string]any{"action": "resolve", "issue": issue, "rev": float64(1), "st": float64(10)}})
	if err != nil || resp.Toast == nil || resp.Toast.Type != "info" {
		t.Fatalf("click answer %+v, %v; want an info toast (queued)", resp.Toast, err)
	}
	close(release)
	waitFor(t, 30*time.Second, "the early reply in Guance", func() bool { return len(h.botReplies(issue)) == 1 })
	waitFor(t, 30*time.Second, "the early click applied", func() bool {
		is, ok := h.gs.Issue(issue)
		return ok && is.StatusType == int(guance.StatusResolved)
	})
	waitFor(t, 30*time.Second, "the other thread's message settled", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueReplies)
		return err == nil && n == 0
	})
	if got := h.botReplies(issue); len(got) != 1 || got[0] != "[飞书] 张三: 已在处理" {
		t.Errorf("replies = %q, want the early one once", got)
	}
	waitFor(t, 10*time.Second, "the command answered", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if strings.Contains(m.Content, "卡片还在发送中") {
				return true
			}
		}
		return false
	})
}

// TestEveryAnswerIsSent: a burst of commands, with Feishu refusing one answer with its
// per-chat rate limit (230020), still gets every answer exactly once: answers are
// durable jobs, paced with the chat's other posts and retried.
func TestEveryAnswerIsSent(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.fs.AddUser("ou_alice", "张三")
	h.fs.ChatQPS = 5
	h.intake = true
	h.start()
	h.bootstrapped()
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	h.fs.FailNext(1, http.StatusBadRequest, feishutest.CodeChatRateLimited)
	const n = 25
	for i := range n {
		e := h.fs.MessageEvent(feishutest.MessageSpec{MessageID: fmt.Sprintf("om_help_%02d", i), ChatID: testChat,
			SenderOpenID: "ou_alice", Content: feishutest.TextContent("@_user_1 help"), Mentions: []feishutest.Mention{bot}})
		if ack, err := h.fs.DeliverWS(t.Context(), e); err != nil || ack.Code != 200 {
			t.Fatalf("deliver: %v %v", ack, err)
		}
	}
	answered := func() map[string]int {
		got := map[string]int{}
		for _, m := range h.fs.Messages(testChat) {
			if m.MsgType == "interactive" && strings.HasPrefix(m.ParentID, "om_help_") {
				got[m.ParentID]++
			}
		}
		return got
	}
	waitFor(t, 60*time.Second, "every help answer", func() bool { return len(answered()) == n })
	for id, c := range answered() {
		if c != 1 {
			t.Errorf("%s answered %d times, want once", id, c)
		}
	}
}

// TestRepliesOfAnIssueKeepTheirOrder: when Guance fails the first of two thread
// replies, the second waits for it: Guance shows them in the order they were written.
func TestRepliesOfAnIssueKeepTheirOrder(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.fs.AddUser("ou_alice", "张三")
	h.intake = true
	var failed atomic.Bool
	h.gs.Fail = func(r *http.Request) (int, string, bool) {
		if strings.HasSuffix(r.URL.Path, "/reply/create") && failed.CompareAndSwap(false, true) {
			return http.StatusServiceUnavailable, `{"code":503,"errorCode":"InternalError","message":"busy","success":false}`, true
		}
		return 0, "", false
	}
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("ordered replies")
	for i, text := range []string{"第一条", "第二条", "第三条"} {
		if ack, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, fmt.Sprintf("om_order_%d", i), card, text)); err != nil || ack.Code != 200 {
			t.Fatalf("deliver: %v %v", ack, err)
		}
	}
	waitFor(t, 30*time.Second, "three replies", func() bool { return len(h.botReplies(issue)) == 3 })
	want := []string{"[飞书] 张三: 第一条", "[飞书] 张三: 第二条", "[飞书] 张三: 第三条"}
	if got := h.botReplies(issue); !slices.Equal(got, want) {
		t.Errorf("replies = %q, want %q", got, want)
	}
	if !failed.Load() {
		t.Error("the first reply never failed; the test did not exercise a retry")
	}
}

// TestRecordedReplyIsNotPostedAgain: when a reply was created and recorded as the
// bot's own but its job could not be removed (the store failed, or the process died
// right then), the retry finishes the job without posting the reply a second time.
func TestRecordedReplyIsNotPostedAgain(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.fs.AddUser("ou_alice", "张三")
	h.intake = true
	var failed atomic.Bool
	h.st = &countingStore{Store: h.st, failDeleteIf: func(queue string) bool {
		return queue == queueReplies && failed.CompareAndSwap(false, true)
	}}
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("recorded reply")
	if ack, err := h.fs.DeliverWS(t.Context(), threadReply(h.fs, "om_once", card, "只发一次")); err != nil || ack.Code != 200 {
		t.Fatalf("deliver: %v %v", ack, err)
	}
	waitFor(t, 30*time.Second, "the reply job done", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueReplies)
		return failed.Load() && err == nil && n == 0
	})
	if got := h.botReplies(issue); len(got) != 1 {
		t.Errorf("replies = %q, want exactly one", got)
	}
}

// TestRefusedAnswerDoesNotHoldTheChat: an answer Feishu refuses for good (its message
// was recalled) is dropped, and the chat's later answers still go out.
func TestRefusedAnswerDoesNotHoldTheChat(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.fs.AddUser("ou_alice", "张三")
	h.intake = true
	h.start()
	h.bootstrapped()
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID, Name: h.fs.BotName}
	help := func(id string) []byte {
		return h.fs.MessageEvent(feishutest.MessageSpec{MessageID: id, ChatID: testChat, SenderOpenID: "ou_alice",
			Content: feishutest.TextContent("@_user_1 help"), Mentions: []feishutest.Mention{bot}})
	}
	first := help("om_recalled")
	h.fs.Recall("om_recalled") // recalled before the bot could answer
	for _, e := range [][]byte{first, help("om_later")} {
		if ack, err := h.fs.DeliverWS(t.Context(), e); err != nil || ack.Code != 200 {
			t.Fatalf("deliver: %v %v", ack, err)
		}
	}
	waitFor(t, 30*time.Second, "the later help answered", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if m.MsgType == "interactive" && m.ParentID == "om_later" {
				return true
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the refused answer dropped", func() bool {
		n, err := h.st.CountJobs(t.Context(), queueAnswers)
		return err == nil && n == 0
	})
}

// TestDeposedLeaderSendsNoReply: a thread reply waiting for the Guance budget when its
// leader loses the lease is not sent by that leader, not even once the budget has room
// again (as when Redis comes back after an outage): it stays queued, and the next term
// posts it once.
func TestDeposedLeaderSendsNoReply(t *testing.T) {
	const limit, win = 18, 8 * time.Second
	h := newHarness(t, "embedded", limit, win)
	h.cfg.InstanceID = "replica-1"
	h.intake = true
	h.fs.AddUser("ou_alice", "张三")
	h.start()
	h.bootstrapped()
	issue, card := h.cardedIssue("db-1 down")

	// Spend the window (the bot's background work leaves the reserve, people's writes
	// take it), then a thread reply arrives and waits for the budget.
	high := guance.WithPriority(t.Context(), guance.PriorityHigh)
	for st := h.cfg.Budget(); st.Used < st.Limit; st = h.cfg.Budget() {
		if _, err := h.gc.ListChannels(high); err != nil {
			t.Fatal(err)
		}
	}
	h.deliver(threadReply(h.fs, "om_deposed", card, "已重启 db-1"))
	waitFor(t, 5*time.Second, "the reply about to be posted", func() bool {
		jobs, err := h.st.DueJobs(context.Background(), queueReplies, time.Now().Add(time.Hour), 0)
		if err != nil || len(jobs) != 1 {
			return false
		}
		var p replyJob
		return json.Unmarshal(jobs[0].Payload, &p) == nil && p.Attempted
	})

	// Another replica takes the lease: this one stops leading at its next renewal, and
	// its reply stops waiting.
	if err := h.st.ReleaseLease(t.Context(), leasePoller, h.bot.holder()); err != nil {
		t.Fatal(err)
	}
	other := store.Holder{Instance: "replica-2", Incarnation: "1"}
	if term, err := h.st.AcquireLease(t.Context(), leasePoller, other, time.Hour); err != nil || term == 0 {
		t.Fatalf("take the lease as replica-2: %d, %v", term, err)
	}
	waitFor(t, 5*time.Second, "the deposed leader's waits given up", func() bool {
		return h.bot.term.Load() == 0 && h.cfg.Budget().Waiting == 0
	})
	granted := h.cfg.Budget().Granted
	waitFor(t, 2*win, "room in the budget again", func() bool { return h.cfg.Budget().Used == 0 })
	if st := h.cfg.Budget(); st.Granted != granted || st.Waiting != 0 {
		t.Errorf("budget after the term = %+v, want nothing granted since (%d)", st, granted)
	}
	if got := h.botReplies(issue); len(got) != 0 {
		t.Fatalf("the deposed leader posted %q", got)
	}
	if n, err := h.st.CountJobs(t.Context(), queueReplies); err != nil || n != 1 {
		t.Fatalf("%d reply jobs (%v), want the reply still queued", n, err)
	}

	// replica-2 goes away; this replica leads again and posts the reply, once.
	if err := h.st.ReleaseLease(t.Context(), leasePoller, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the reply in Guance", func() bool { return len(h.botReplies(issue)) == 1 })
	h.quietReplies()
	if got := h.botReplies(issue); len(got) != 1 || got[0] != "[飞书] 张三: 已重启 db-1" {
		t.Errorf("Guance replies = %q, want the one reply", got)
	}
}
