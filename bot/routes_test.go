package bot

import (
	"context"
	"encoding/json"
	"io"
	"issuebot/bot/feishu"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
)

// Chats of the routing tests besides testChat (the default chat).
const (
	chatSRE = "oc_sre"
	chatDB  = "oc_db"
)

// routeHarness runs a bot with the long-connection intake, two groups besides the
// default chat, and the Guance channels sre and db.
func routeHarness(t *testing.T, kind string) *harness {
	h := newHarness(t, kind, 18, time.Second)
	h.intake = true
	h.fs.SetChat(chatSRE, feishutest.ChatSpec{Name: "SRE 值班"})
	h.fs.SetChat(chatDB, feishutest.ChatSpec{Name: "DB team", OwnerOnly: true, Owner: "ou_owner", Managers: []string{"ou_mgr"}})
	h.fs.AddUser("ou_alice", "张三")
	h.fs.AddUser("ou_owner", "王五")
	h.gs.AddChannel("sre")
	h.gs.AddChannel("db")
	return h
}

// say delivers a message that @-mentions the bot in chat and returns its id.
func (h *harness) say(chat, sender, text string) string {
	h.t.Helper()
	bot := feishutest.Mention{Key: "@_user_1", OpenID: h.fs.BotOpenID}
	ev := h.fs.MessageEvent(feishutest.MessageSpec{ChatID: chat, SenderOpenID: sender,
		Content: feishutest.TextContent("@_user_1 " + text), Mentions: []feishutest.Mention{bot}})
	return h.deliver(ev)
}

// deliver sends an event over the long connection and returns its message id.
func (h *harness) deliver(ev []byte) string {
	h.t.Helper()
	ack, err := h.fs.DeliverWS(h.t.Context(), ev)
	if err != nil || ack.Code != 200 {
		h.t.Fatalf("deliver event: %+v %v", ack, err)
	}
	var v struct {
		Event struct {
			Message struct {
				MessageID string `json:"message_id"`
			} `json:"message"`
		} `json:"event"`
	}
	_ = json.Unmarshal(ev, &v)
	return v.Event.Message.MessageID
}

// answer waits for the bot's reply to a message and returns its text (or card JSON).
func (h *harness) answer(chat, messageID string) string {
	h.t.Helper()
	var got string
	waitFor(h.t, 20*time.Second, "the answer to "+messageID, func() bool {
		for _, m := range h.fs.Messages(chat) {
			if m.ParentID == messageID && m.SenderType == "app" {
				got = m.Content
				if m.MsgType == "text" {
					got = textOf(h.t, m.Content)
				}
				return true
			}
		}
		return false
	})
	return got
}

// cardsIn returns the issue cards in chat, by issue uuid.
func (h *harness) cardsIn(chat string) map[string][]feishutest.Message {
	out := map[string][]feishutest.Message{}
	for _, m := range h.fs.Messages(chat) {
		if m.MsgType != "interactive" || m.RootID != "" || isDigest(m) {
			continue // (a storm digest names many issues)
		}
		if i := strings.Index(m.Content, `"issue":"`); i >= 0 {
			rest := m.Content[i+len(`"issue":"`):]
			id := rest[:strings.IndexByte(rest, '"')]
			out[id] = append(out[id], m)
		}
	}
	return out
}

// cardIn waits for the issue's one card in chat and returns its message id.
func (h *harness) cardIn(chat, issueUUID string) string {
	h.t.Helper()
	var id string
	waitFor(h.t, 30*time.Second, "the card of "+issueUUID+" in "+chat, func() bool {
		rec, err := h.st.GetIssue(context.Background(), issueUUID)
		if c := rec.Card(chat); err == nil && c != nil {
			id = c.MessageID
		}
		return id != ""
	})
	return id
}

// postsIn returns the texts the bot posted in a card's thread.
func (h *harness) postsIn(chat, card string) []string {
	var out []string
	for _, m := range h.fs.Messages(chat) {
		if m.RootID == card && m.MsgType == "text" && m.SenderType == "app" {
			out = append(out, textOf(h.t, m.Content))
		}
	}
	return out
}

// TestRoutedIssueIsLiveInEveryChat: two groups bind channels with level filters from
// the chat; an issue in both channels gets a live card in each (and none in the default
// chat): a status change in Guance patches both, a Guance reply appears in both
// threads, a thread reply from each group becomes one Guance reply naming the group and
// shows in the other group's thread, and a click in one patches the other. A low-level
// issue skips the group whose filter excludes it and, unrouted, goes to the default
// chat. Routes survive a restart; unbind takes the chat out.
func TestRoutedIssueIsLiveInEveryChat(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h := routeHarness(t, kind)
			h.start()
			h.bootstrapped()

			if got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind sre P1")); !strings.Contains(got, "已绑定") || !strings.Contains(got, "P1") {
				t.Fatalf("bind sre P1 answered %q", got)
			}
			if got := h.answer(chatDB, h.say(chatDB, "ou_owner", "bind db")); !strings.Contains(got, "Bound") {
				t.Fatalf("bind db answered %q", got)
			}

			both := h.gs.AddIssue(guancetest.IssueSpec{Name: "db latency", Channels: []string{"sre", "db"}, Level: "system_level_0"})
			low := h.gs.AddIssue(guancetest.IssueSpec{Name: "slow page", Channels: []string{"sre"}, Level: "system_level_3"})
			sreCard, dbCard := h.cardIn(chatSRE, both.UUID), h.cardIn(chatDB, both.UUID)
			lowCard := h.cardIn(testChat, low.UUID)
			h.quiet(2)
			if n := len(h.cardsIn(testChat)[both.UUID]); n != 0 {
				t.Errorf("the routed issue has %d cards in the default chat, want 0", n)
			}
			if n := len(h.cardsIn(chatSRE)[low.UUID]); n != 0 || lowCard == "" {
				t.Errorf("the P3 issue has %d cards in the P1 group, want 0", n)
			}
			for _, chat := range []string{chatSRE, chatDB} {
				if n := len(h.cardsIn(chat)[both.UUID]); n != 1 {
					t.Errorf("chat %s holds %d cards of the issue, want 1", chat, n)
				}
			}

			// Guance → both cards and both threads.
			h.gs.SetStatus(both.UUID, 30)
			h.gs.AddHumanReply(both.UUID, "李四", "looking at the replica lag")
			for chat, card := range map[string]string{chatSRE: sreCard, chatDB: dbCard} {
				waitFor(t, 30*time.Second, "the status change on the card in "+chat, func() bool {
					return strings.Contains(h.cardContent(card), `"st":30`)
				})
				waitFor(t, 30*time.Second, "the Guance reply in the thread in "+chat, func() bool {
					return slices.ContainsFunc(h.postsIn(chat, card), func(s string) bool { return strings.Contains(s, "replica lag") })
				})
			}

			// Each group's thread reply → one Guance reply each, naming its group, and
			// shown in the other group's thread.
			h.deliver(h.fs.MessageEvent(feishutest.MessageSpec{ChatID: chatSRE, RootID: sreCard, SenderOpenID: "ou_alice",
				Content: feishutest.TextContent("failing over now")}))
			h.deliver(h.fs.MessageEvent(feishutest.MessageSpec{ChatID: chatDB, RootID: dbCard, SenderOpenID: "ou_owner",
				Content: feishutest.TextContent("replica is back")}))
			waitFor(t, 30*time.Second, "both thread replies in Guance", func() bool { return len(h.botReplies(both.UUID)) == 2 })
			replies := strings.Join(h.botReplies(both.UUID), "\n")
			if !strings.Contains(replies, "[飞书 · SRE 值班] 张三: failing over now") || !strings.Contains(replies, "[飞书 · DB team] 王五: replica is back") {
				t.Errorf("Guance replies = %q, want each naming its group", replies)
			}
			waitFor(t, 30*time.Second, "each reply in the other group's thread", func() bool {
				return slices.ContainsFunc(h.postsIn(chatDB, dbCard), func(s string) bool { return strings.Contains(s, "failing over now") }) &&
					slices.ContainsFunc(h.postsIn(chatSRE, sreCard), func(s string) bool { return strings.Contains(s, "replica is back") })
			})
			if n := len(slices.DeleteFunc(h.postsIn(chatSRE, sreCard), func(s string) bool { return !strings.Contains(s, "failing over") })); n != 0 {
				t.Errorf("the SRE reply was echoed into its own thread %d times", n)
			}

			// A click in one group changes Guance once and patches the other group's card.
			h.click(dbCard, "ou_owner", buttonValue(t, h.cardContent(dbCard), "resolve"))
			waitFor(t, 30*time.Second, "the resolve on the other group's card", func() bool {
				return strings.Contains(h.cardContent(sreCard), `"st":20`)
			})
			if is, _ := h.gs.Issue(both.UUID); is.StatusType != 20 {
				t.Errorf("Guance status = %d after the click, want 20", is.StatusType)
			}

			// Routes survive a restart; unbind takes the SRE group out.
			h.terminate()
			h.start()
			later := h.gs.AddIssue(guancetest.IssueSpec{Name: "after restart", Channels: []string{"sre"}, Level: "system_level_1"})
			h.cardIn(chatSRE, later.UUID)
			if got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "unbind sre")); !strings.Contains(got, "已解除") {
				t.Fatalf("unbind sre answered %q", got)
			}
			unbound := h.gs.AddIssue(guancetest.IssueSpec{Name: "after unbind", Channels: []string{"sre"}, Level: "system_level_0"})
			h.cardIn(testChat, unbound.UUID)
			h.quiet(2)
			if n := len(h.cardsIn(chatSRE)[unbound.UUID]); n != 0 {
				t.Errorf("an unbound group got %d cards", n)
			}
			for chat, want := range map[string]int{chatSRE: 2, chatDB: 1, testChat: 2} {
				if got := len(h.cardsIn(chat)); got != want {
					t.Errorf("chat %s holds cards of %d issues, want %d", chat, got, want)
				}
			}
		})
	}
}

// TestBindRules: who may bind is the group's own rule; an unknown channel lists those
// that exist; bind alone shows the routes; unbind alone removes them all (and says how
// many, also when its answer had to be posted again); a direct chat cannot bind. Every
// command is answered as a reply, in both languages.
func TestBindRules(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) { testBindRules(t, kind) })
	}
}

func testBindRules(t *testing.T, kind string) {
	h := routeHarness(t, kind)
	var failed atomic.Bool
	h.fs.Fail = func(r *http.Request) (int, string, bool) {
		body, _ := io.ReadAll(r.Body)
		if strings.HasSuffix(r.URL.Path, "/reply") && strings.Contains(string(body), "Removed all") && failed.CompareAndSwap(false, true) {
			return http.StatusInternalServerError, `{"code":1500,"msg":"internal error"}`, true
		}
		return 0, "", false
	}
	h.start()
	h.bootstrapped()
	if got := h.answer(chatDB, h.say(chatDB, "ou_alice", "bind db P2")); !strings.Contains(got, "只允许群主和群管理员") || !strings.Contains(got, "owner and managers") {
		t.Errorf("a member's bind in an owner-only group answered %q", got)
	}
	if rs, _ := h.st.Routes(t.Context()); len(rs) != 0 {
		t.Errorf("a refused bind stored routes %+v", rs)
	}
	if got := h.answer(chatDB, h.say(chatDB, "ou_mgr", "bind db P2")); !strings.Contains(got, "已绑定") {
		t.Errorf("a manager's bind answered %q", got)
	}
	got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind nosuch"))
	for _, want := range []string{"没有频道「nosuch」", "has no channel", "sre", "db", "default"} {
		if !strings.Contains(got, want) {
			t.Errorf("unknown channel answered %q, want it to contain %q", got, want)
		}
	}
	if got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind sre P9")); !strings.Contains(got, "Usage") {
		t.Errorf("a bad level answered %q", got)
	}
	h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind sre"))
	h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind default P0"))
	if got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind")); !strings.Contains(got, "sre ≥ P3") || !strings.Contains(got, "default ≥ P0") {
		t.Errorf("bind alone answered %q, want both routes", got)
	}
	if got := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "unbind")); !strings.Contains(got, "全部 2 条") || !failed.Load() {
		t.Errorf("unbind alone answered %q (first answer failed: %v), want 2 routes removed", got, failed.Load())
	}
	rs, _ := h.st.Routes(t.Context())
	if len(rs) != 1 || rs[0].ChatID != chatDB || rs[0].MinLevel != "P2" {
		t.Errorf("routes = %+v, want only the DB group's", rs)
	}
	h.fs.AddChat("oc_dm")
	dm := h.deliver(h.fs.MessageEvent(feishutest.MessageSpec{ChatID: "oc_dm", ChatType: "p2p", SenderOpenID: "ou_alice",
		Content: feishutest.TextContent("bind sre")}))
	if got := h.answer("oc_dm", dm); !strings.Contains(got, "in a group") {
		t.Errorf("bind in a direct chat answered %q", got)
	}
}

// TestListStatusHelpInGroupAndDirectChat: list shows the chat's open issues (a direct
// chat the default chat's), status shows the chat's routes, help the commands.
func TestListStatusHelpInGroupAndDirectChat(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) { testListStatusHelp(t, kind) })
	}
}

func testListStatusHelp(t *testing.T, kind string) {
	h := routeHarness(t, kind)
	h.start()
	h.bootstrapped()
	h.answer(chatSRE, h.say(chatSRE, "ou_alice", "bind sre"))
	open := h.gs.AddIssue(guancetest.IssueSpec{Name: "queue backlog", Channels: []string{"sre"}, Level: "system_level_1"})
	done := h.gs.AddIssue(guancetest.IssueSpec{Name: "already fixed", Channels: []string{"sre"}})
	other := h.gs.AddIssue(guancetest.IssueSpec{Name: "elsewhere"})
	h.cardIn(chatSRE, open.UUID)
	h.cardIn(chatSRE, done.UUID)
	h.cardIn(testChat, other.UUID)
	h.gs.SetStatus(done.UUID, 20)
	waitFor(t, 30*time.Second, "the resolve recorded", func() bool { return h.record(done.UUID).StatusType == 20 })

	list := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "list"))
	if !strings.Contains(list, "queue backlog") || strings.Contains(list, "already fixed") || strings.Contains(list, "elsewhere") || !strings.Contains(list, "P1") {
		t.Errorf("list in the SRE group = %s", list)
	}
	status := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "status"))
	if !strings.Contains(status, "issuebot 状态") || !strings.Contains(status, "sre ≥ P3") {
		t.Errorf("status in the SRE group = %q", status)
	}
	if help := h.answer(chatSRE, h.say(chatSRE, "ou_alice", "help")); !strings.Contains(help, "bind") || !strings.Contains(help, "list") {
		t.Errorf("help = %s", help)
	}
	h.fs.AddChat("oc_dm")
	for cmd, want := range map[string]string{"list": "elsewhere", "status": "默认群", "help": "unbind"} {
		id := h.deliver(h.fs.MessageEvent(feishutest.MessageSpec{ChatID: "oc_dm", ChatType: "p2p", SenderOpenID: "ou_alice",
			Content: feishutest.TextContent(cmd)}))
		if got := h.answer("oc_dm", id); !strings.Contains(got, want) {
			t.Errorf("%s in a direct chat = %q, want it to contain %q", cmd, got, want)
		}
	}
}

// TestBotAddedAndRemoved: the bot added to a group posts a welcome card there; removed
// from a group (or the group disbanded), its routes are gone, queued work for it ends,
// nothing more is posted there, and its issues go where the remaining routes say.
func TestBotAddedAndRemoved(t *testing.T) {
	for _, c := range []struct{ how, kind string }{{"removed", "embedded"}, {"disbanded", "redis"}} {
		how := c.how
		t.Run(c.how+"/"+c.kind, func(t *testing.T) {
			h := routeHarness(t, c.kind)
			h.start()
			h.bootstrapped()
			h.deliver(h.fs.BotAddedEvent("oc_new", "ou_alice"))
			waitFor(t, 20*time.Second, "the welcome card", func() bool {
				for _, m := range h.fs.Messages("oc_new") {
					if m.MsgType == "interactive" && strings.Contains(m.Content, "bind") {
						return true
					}
				}
				return false
			})
			h.answer(chatDB, h.say(chatDB, "ou_owner", "bind db"))
			first := h.gs.AddIssue(guancetest.IssueSpec{Name: "before", Channels: []string{"db"}})
			card := h.cardIn(chatDB, first.UUID)
			h.quiet(1)
			before := len(h.fs.Messages(chatDB))

			ev := h.fs.BotRemovedEvent(chatDB, "ou_owner")
			if how == "disbanded" {
				ev = h.fs.ChatDisbandedEvent(chatDB, "ou_owner")
			}
			h.deliver(ev)
			waitFor(t, 20*time.Second, "the group's routes dropped and its card forgotten", func() bool {
				rs, err := h.st.Routes(context.Background())
				rec, rerr := h.st.GetIssue(context.Background(), first.UUID)
				return err == nil && len(rs) == 0 && rerr == nil && rec.Card(chatDB) == nil
			})
			h.gs.AddHumanReply(first.UUID, "李四", "anyone?")
			h.gs.SetStatus(first.UUID, 30)
			next := h.gs.AddIssue(guancetest.IssueSpec{Name: "after", Channels: []string{"db"}})
			h.cardIn(testChat, next.UUID)
			h.quiet(3)
			if after := len(h.fs.Messages(chatDB)); after != before {
				t.Errorf("the bot posted %d messages into a chat it left", after-before)
			}
			if m, _ := h.fs.Message(card); strings.Contains(m.Content, `"st":30`) {
				t.Error("the card in the chat the bot left was patched")
			}
			var left store.Issue
			if left, _ = h.st.GetIssue(t.Context(), first.UUID); len(left.Cards) != 0 {
				t.Errorf("cards of the issue = %+v, want none", left.Cards)
			}
		})
	}
}

// TestCardForALeftChatIsRerouted: a card still queued for a group the bot has left is
// not sent there; the issue goes where the remaining routes say (the default chat).
func TestCardForALeftChatIsRerouted(t *testing.T) {
	h, b, _ := scanHarness(t)
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: "queued for a group that went away"})
	parsed, err := h.gc.GetIssue(t.Context(), is.UUID)
	if err != nil {
		t.Fatal(err)
	}
	h.fs.AddChat("oc_gone")
	if err := b.cards.Enqueue(t.Context(), cardJobID(is.UUID, "oc_gone"), cardJob{Issue: *parsed, ChatID: "oc_gone"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.HandleBotRemoved(t.Context(), feishu.ChatEvent{ChatID: "oc_gone", EventID: "ev1"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := b.cards.Pass(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(h.fs.Messages("oc_gone")); n != 0 {
		t.Errorf("%d messages posted into the chat the bot left", n)
	}
	if got := h.cardsFor(is.UUID); got != 1 {
		t.Errorf("the default chat holds %d cards of the rerouted issue, want 1", got)
	}
	if n, err := h.st.CountJobs(t.Context(), queueCards); err != nil || n != 0 {
		t.Errorf("card jobs left = %d, %v", n, err)
	}
}

// TestRouteToALeftChatFallsBack: a route to a chat the bot has left (its goodbye not
// yet done) takes nothing, so the issue goes to the default chat instead of nowhere.
func TestRouteToALeftChatFallsBack(t *testing.T) {
	h, b, _ := scanHarness(t)
	ctx := t.Context()
	if err := h.st.SetMeta(ctx, metaChannel+"default", "chan_default"); err != nil {
		t.Fatal(err)
	}
	if err := h.st.PutRoute(ctx, store.Route{ChatID: "oc_gone", ChannelUUID: "chan_default", MinLevel: "P3"}); err != nil {
		t.Fatal(err)
	}
	is := guance.Issue{UUID: "issue_routed_0001", Level: "system_level_1"}
	if chats, err := b.routeIssue(ctx, is); err != nil || !slices.Equal(chats, []string{"oc_gone"}) {
		t.Fatalf("routeIssue = %v, %v; want the bound chat", chats, err)
	}
	if err := h.st.SetMeta(ctx, metaChatLeft+"oc_gone", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	if chats, err := b.routeIssue(ctx, is); err != nil || !slices.Equal(chats, []string{testChat}) {
		t.Errorf("routeIssue with the bound chat left = %v, %v; want the default chat", chats, err)
	}
}

// TestChatEventsOutOfOrder: a removal delivered after a later re-add (Feishu redelivers
// for hours) does not mark the chat left nor drop its routes; a later removal does.
func TestChatEventsOutOfOrder(t *testing.T) {
	h, b, _ := scanHarness(t)
	ctx := t.Context()
	t0 := time.Now().Add(-time.Hour)
	if err := h.st.PutRoute(ctx, store.Route{ChatID: chatSRE, ChannelUUID: "chan_1", MinLevel: "P3"}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.HandleBotAdded(ctx, feishu.ChatEvent{EventID: "ev_add", ChatID: chatSRE, EventTime: t0.Add(time.Minute)}))
	must(b.HandleBotRemoved(ctx, feishu.ChatEvent{EventID: "ev_old_remove", ChatID: chatSRE, EventTime: t0}))
	if left, err := b.chatLeft(ctx, chatSRE); err != nil || left {
		t.Errorf("a stale removal marked the chat left (%v, %v)", left, err)
	}
	if rs, _ := h.st.Routes(ctx); len(rs) != 1 {
		t.Errorf("a stale removal dropped the routes: %+v", rs)
	}
	must(b.HandleBotRemoved(ctx, feishu.ChatEvent{EventID: "ev_remove", ChatID: chatSRE, EventTime: t0.Add(2 * time.Minute)}))
	if left, err := b.chatLeft(ctx, chatSRE); err != nil || !left {
		t.Errorf("a later removal did not mark the chat left (%v, %v)", left, err)
	}
	if rs, _ := h.st.Routes(ctx); len(rs) != 0 {
		t.Errorf("routes after the removal = %+v", rs)
	}
	must(b.HandleBotAdded(ctx, feishu.ChatEvent{EventID: "ev_readd", ChatID: chatSRE, EventTime: t0.Add(3 * time.Minute)}))
	if left, _ := b.chatLeft(ctx, chatSRE); left {
		t.Error("re-added chat still marked left")
	}
}
