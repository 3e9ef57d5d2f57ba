package feishu_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
)

func newClient(t *testing.T, srv *feishutest.Server, logs *syncBuffer) *feishu.Client {
	t.Helper()
	c, err := feishu.NewClient(feishu.Config{
		AppID: srv.AppID, AppSecret: srv.AppSecret, BaseURL: srv.URL, Logger: testLogger(t, logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const card = `{"schema":"2.0","header":{"title":{"tag":"plain_text","content":"disk full"}},"body":{"elements":[]}}`

func TestSendCardIsIdempotentByUUID(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	c := newClient(t, srv, &syncBuffer{})
	ctx := t.Context()
	first, err := c.SendCard(ctx, "oc_1", []byte(card), "issue_1-oc_1")
	if err != nil {
		t.Fatalf("SendCard: %v", err)
	}
	again, err := c.SendCard(ctx, "oc_1", []byte(card), "issue_1-oc_1")
	if err != nil {
		t.Fatalf("SendCard again: %v", err)
	}
	if first.MessageID == "" || again.MessageID != first.MessageID {
		t.Errorf("message ids %q and %q, want one non-empty id", first.MessageID, again.MessageID)
	}
	if got := len(srv.Messages("oc_1")); got != 1 {
		t.Errorf("chat holds %d messages, want 1", got)
	}
	m, _ := srv.Message(first.MessageID)
	if m.MsgType != "interactive" || m.Content != card {
		t.Errorf("stored message = %+v", m)
	}
	if _, err := c.SendCard(ctx, "oc_1", []byte(card), strings.Repeat("u", feishu.MaxUUIDLen+1)); err == nil {
		t.Error("SendCard accepted an over-long uuid")
	}
}

func TestReplyPatchReactNameIdentity(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	srv.AddUser("ou_alice", "张三")
	c := newClient(t, srv, &syncBuffer{})
	ctx := t.Context()
	sent, err := c.SendCard(ctx, "oc_1", []byte(card), "")
	if err != nil {
		t.Fatal(err)
	}
	r1, err := c.ReplyText(ctx, sent.MessageID, "first reply", true, "r1")
	if err != nil {
		t.Fatalf("ReplyText: %v", err)
	}
	if r1.ThreadID == "" || r1.RootID != sent.MessageID {
		t.Errorf("thread reply = %+v, want a thread rooted at %s", r1, sent.MessageID)
	}
	r2, err := c.ReplyCard(ctx, sent.MessageID, []byte(card), true, "r2")
	if err != nil {
		t.Fatalf("ReplyCard: %v", err)
	}
	if r2.ThreadID != r1.ThreadID {
		t.Errorf("second thread reply in %q, want %q", r2.ThreadID, r1.ThreadID)
	}
	patched := strings.Replace(card, "disk full", "disk full (resolved)", 1)
	if err := c.PatchCard(ctx, sent.MessageID, []byte(patched)); err != nil {
		t.Fatalf("PatchCard: %v", err)
	}
	if m, _ := srv.Message(sent.MessageID); len(m.Patches) != 1 || m.Patches[0] != patched {
		t.Errorf("patches = %v", m.Patches)
	}
	if err := c.AddReaction(ctx, r1.MessageID, "DONE"); err != nil {
		t.Fatalf("AddReaction: %v", err)
	}
	if m, _ := srv.Message(r1.MessageID); len(m.Reactions) != 1 || m.Reactions[0] != "DONE" {
		t.Errorf("reactions = %v", m.Reactions)
	}
	for range 3 {
		name, err := c.UserName(ctx, "ou_alice")
		if err != nil || name != "张三" {
			t.Fatalf("UserName = %q, %v", name, err)
		}
	}
	if got := srv.UserLookups("ou_alice"); got != 1 {
		t.Errorf("contact lookups = %d, want 1 (cached)", got)
	}
	id, err := c.BotOpenID(ctx)
	if err != nil || id != srv.BotOpenID {
		t.Errorf("BotOpenID = %q, %v; want %q", id, err, srv.BotOpenID)
	}
}

func TestUserNameRefusalIsCachedBriefly(t *testing.T) {
	srv := feishutest.NewServer(t)
	c := newClient(t, srv, &syncBuffer{})
	for range 3 {
		if _, err := c.UserName(t.Context(), "ou_stranger"); err == nil {
			t.Fatal("UserName of an unknown user succeeded")
		}
	}
	if got := srv.UserLookups("ou_stranger"); got != 1 {
		t.Errorf("lookups of a refused user = %d, want 1", got)
	}
}

func TestNonZeroCodeBecomesTypedError(t *testing.T) {
	srv := feishutest.NewServer(t)
	c := newClient(t, srv, &syncBuffer{})
	_, err := c.SendCard(t.Context(), "oc_unknown", []byte(card), "")
	var fe *feishu.Error
	if !errors.As(err, &fe) {
		t.Fatalf("SendCard to a chat without the bot = %v, want *feishu.Error", err)
	}
	if !fe.NotInChat() || fe.Code != 230002 || fe.Temporary() || feishu.Retryable(t.Context(), err) {
		t.Errorf("error = %+v (temporary %v), want 230002, not retryable", fe, fe.Temporary())
	}
	if fe.LogID == "" {
		t.Errorf("error carries no log id: %v", err)
	}
}

func TestChatThrottleIsRetryable(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.RateWindow = time.Minute // the burst must land in one window even on a slow machine
	srv.AddChat("oc_1")
	c := newClient(t, srv, &syncBuffer{})
	var throttled error
	for i := range 10 {
		if _, err := c.SendText(t.Context(), "oc_1", "burst", ""); err != nil {
			throttled = err
			if i < 5 {
				t.Errorf("send %d refused: %v", i, err)
			}
			break
		}
	}
	var fe *feishu.Error
	if !errors.As(throttled, &fe) || !fe.Throttled() || !feishu.Retryable(t.Context(), throttled) {
		t.Fatalf("burst into one chat = %v, want a retryable throttle", throttled)
	}
}

func TestStaleTokenIsRefetched(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	c := newClient(t, srv, &syncBuffer{})
	ctx := t.Context()
	if _, err := c.SendText(ctx, "oc_1", "one", ""); err != nil {
		t.Fatal(err)
	}
	srv.InvalidateTokens()
	if _, err := c.SendText(ctx, "oc_1", "two", ""); err != nil {
		t.Fatalf("send after the token went stale: %v", err)
	}
	if got := srv.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2 (one refetch)", got)
	}
	if got := len(srv.Messages("oc_1")); got != 2 {
		t.Errorf("messages = %d, want 2", got)
	}
}

// A proxy's HTML error page (no JSON) must still become a retryable error with its status.
func TestNonJSONGatewayErrorIsRetryable(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tenant_access_token/internal") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"code":0,"msg":"ok","tenant_access_token":"t-x","expire":7200}`))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
	}))
	defer hs.Close()
	c, err := feishu.NewClient(feishu.Config{AppID: "cli_gw", AppSecret: "gw-secret-1", BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendCard(t.Context(), "oc_1", []byte(card), "")
	if err == nil || !feishu.Retryable(t.Context(), err) || !strings.Contains(err.Error(), "502") {
		t.Errorf("SendCard through a failing gateway = %v, want a retryable error naming 502", err)
	}
}

func TestSecretsStayOutOfErrorsAndLogs(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	logs := &syncBuffer{}
	// Wrong secret: the token fetch fails.
	bad, err := feishu.NewClient(feishu.Config{AppID: srv.AppID, AppSecret: "not-the-secret-QQQ", BaseURL: srv.URL, Logger: testLogger(t, logs)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.SendCard(t.Context(), "oc_1", []byte(card), "")
	if err == nil {
		t.Fatal("SendCard with a wrong secret succeeded")
	}
	text := err.Error()
	// Right secret, then failures of every kind.
	c := newClient(t, srv, logs)
	_, err = c.SendCard(t.Context(), "oc_nochat", []byte(card), "")
	text += err.Error()
	srv.InvalidateTokens()
	srv.FailNext(3, 500, 1500)
	_, err = c.SendText(t.Context(), "oc_1", "x", "")
	if err != nil {
		text += err.Error()
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.UserName(cancelled, "ou_x"); err != nil {
		text += err.Error()
	}
	assertNoSecret(t, text+logs.String(), "not-the-secret-QQQ", srv.AppSecret, "t-1", "t-2", "t-3")
}

func TestChatInfoAndMembership(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.SetChat("oc_owned", feishutest.ChatSpec{Name: "SRE", OwnerOnly: true, Owner: "ou_owner", Managers: []string{"ou_mgr"}})
	srv.AddChat("oc_open")
	c := newClient(t, srv, &syncBuffer{})
	ctx := t.Context()
	owned, err := c.ChatInfo(ctx, "oc_owned")
	if err != nil {
		t.Fatalf("ChatInfo: %v", err)
	}
	if owned.Name != "SRE" || !owned.OwnerOnly || !owned.CanEdit("ou_owner") || !owned.CanEdit("ou_mgr") || owned.CanEdit("ou_someone") || owned.CanEdit("") {
		t.Errorf("owner-only chat = %+v", owned)
	}
	open, err := c.ChatInfo(ctx, "oc_open")
	if err != nil || open.OwnerOnly || !open.CanEdit("ou_someone") {
		t.Errorf("open chat = %+v, %v", open, err)
	}
	var fe *feishu.Error
	if _, err := c.ChatInfo(ctx, "oc_elsewhere"); !errors.As(err, &fe) || fe.Temporary() {
		t.Errorf("ChatInfo of a chat the bot is not in: %v, want a lasting *feishu.Error", err)
	}
	if in, err := c.BotInChat(ctx, "oc_open"); err != nil || !in {
		t.Errorf("BotInChat(member) = %v, %v", in, err)
	}
	if in, err := c.BotInChat(ctx, "oc_elsewhere"); err != nil || in {
		t.Errorf("BotInChat(not a member) = %v, %v", in, err)
	}
}
