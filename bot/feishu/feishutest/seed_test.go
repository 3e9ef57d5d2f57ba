package feishutest_test

import (
	"strings"
	"testing"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"

	"issuebot/bot/feishu/feishutest"
)

// TestSeedCard: seeded cards cost no request and no rate limit, and behave like cards
// the API created: a reply in thread lands in the card's thread, and the card can be
// patched; an unknown chat or a card the platform refuses fails the test.
func TestSeedCard(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	sentAt := time.Now().Add(-2 * time.Hour)
	var seeded []feishutest.Message
	for range 50 { // ten times the chat's limit in one second
		seeded = append(seeded, srv.SeedCard("oc_1", card, sentAt))
	}
	if n := len(srv.Requests()); n != 0 || srv.Throttled() != 0 {
		t.Errorf("seeding made %d requests and %d throttles, want 0", n, srv.Throttled())
	}
	m := seeded[7]
	if m.ID == "" || m.ChatID != "oc_1" || m.MsgType != "interactive" || m.SenderType != "app" ||
		m.SenderID != srv.AppID || !m.Created.Equal(sentAt) || m.Content != card {
		t.Errorf("seeded card = %+v", m)
	}
	if got := len(srv.Messages("oc_1")); got != 50 {
		t.Errorf("%d messages in the chat, want 50", got)
	}

	cli := newClient(srv)
	r, err := cli.Im.V1.Message.Reply(t.Context(), larkim.NewReplyMessageReqBuilder().MessageId(m.ID).
		Body(larkim.NewReplyMessageReqBodyBuilder().MsgType("text").Content(feishutest.TextContent("in the thread")).
			ReplyInThread(true).Build()).Build())
	if err != nil || !r.Success() {
		t.Fatalf("reply to a seeded card: err %v, resp %+v", err, r)
	}
	if root := larkcore.StringValue(r.Data.RootId); root != m.ID {
		t.Errorf("the reply's root_id = %q, want the seeded card %q", root, m.ID)
	}
	if got, _ := srv.Message(m.ID); got.ThreadID == "" || got.ThreadID != larkcore.StringValue(r.Data.ThreadId) {
		t.Errorf("the seeded card's thread = %q, the reply's %q", got.ThreadID, larkcore.StringValue(r.Data.ThreadId))
	}
	patched := strings.Replace(card, `"hi"`, `"patched"`, 1)
	p, err := cli.Im.V1.Message.Patch(t.Context(), larkim.NewPatchMessageReqBuilder().MessageId(m.ID).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(patched).Build()).Build())
	if err != nil || !p.Success() {
		t.Fatalf("patch a seeded card: err %v, resp %+v", err, p)
	}
	if got, _ := srv.Message(m.ID); got.Content != patched || len(got.Patches) != 1 {
		t.Errorf("after the patch the seeded card is %+v", got)
	}

	ft := &fakeTB{TB: t}
	strict := feishutest.NewServer(ft)
	strict.AddChat("oc_1")
	if got := strict.SeedCard("oc_other", card, time.Time{}); got.ID != "" {
		t.Errorf("seeding into a chat without the bot returned %+v", got)
	}
	if got := strict.SeedCard("oc_1", "{nope", time.Time{}); got.ID != "" {
		t.Errorf("seeding a card that is not JSON returned %+v", got)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.errors) != 2 || !strings.Contains(ft.errors[0], "not in chat oc_other") || !strings.Contains(ft.errors[1], "refuses the card") {
		t.Errorf("errors = %q", ft.errors)
	}
}
