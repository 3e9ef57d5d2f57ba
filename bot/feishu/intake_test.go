package feishu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
)

// recorder is a feishu.Handler that records what it receives.
type recorder struct {
	mu       sync.Mutex
	messages []feishu.Message
	actions  []feishu.CardAction
	added    []feishu.ChatEvent
	removed  []feishu.ChatEvent
	got      chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 100)} }

func (r *recorder) HandleMessage(ctx context.Context, m feishu.Message) error {
	r.mu.Lock()
	r.messages = append(r.messages, m)
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
}

func (r *recorder) HandleCardAction(ctx context.Context, a feishu.CardAction) (feishu.CardResponse, error) {
	r.mu.Lock()
	r.actions = append(r.actions, a)
	r.mu.Unlock()
	r.got <- struct{}{}
	return feishu.CardResponse{Toast: &feishu.Toast{Type: "success", ZhCN: "已解决", EnUS: "Resolved"}}, nil
}

func (r *recorder) HandleBotAdded(ctx context.Context, e feishu.ChatEvent) error {
	r.mu.Lock()
	r.added = append(r.added, e)
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
}

func (r *recorder) HandleBotRemoved(ctx context.Context, e feishu.ChatEvent) error {
	r.mu.Lock()
	r.removed = append(r.removed, e)
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
}

func (r *recorder) counts() (msgs, actions, added int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.messages), len(r.actions), len(r.added)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T, buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func assertNoSecret(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret %q leaked into logs or errors", s)
		}
	}
}

func startWS(t *testing.T, srv *feishutest.Server, h feishu.Handler, logs *syncBuffer) *feishu.Intake {
	t.Helper()
	in, err := feishu.NewIntake(feishu.IntakeConfig{
		AppID: srv.AppID, AppSecret: srv.AppSecret, BaseURL: srv.URL, Mode: feishu.ModeWS,
		Logger: testLogger(t, logs),
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of cancel")
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := srv.WaitConnected(wctx); err != nil {
		t.Fatalf("long connection: %v", err)
	}
	waitUntil(t, 5*time.Second, in.Ready)
	return in
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		<-tick.C
	}
}

func TestIntakeWSDeliversAndAcks(t *testing.T) {
	srv := feishutest.NewServer(t)
	rec := newRecorder()
	logs := &syncBuffer{}
	startWS(t, srv, rec, logs)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	ack, err := srv.DeliverWS(ctx, srv.MessageEvent(feishutest.MessageSpec{
		MessageID: "om_1", ChatID: "oc_1", RootID: "om_card", ThreadID: "omt_1", SenderOpenID: "ou_alice",
		Content:  feishutest.TextContent("@_user_1 restarted db-1"),
		Mentions: []feishutest.Mention{{Key: "@_user_1", OpenID: "ou_bob", Name: "Bob"}},
	}))
	if err != nil {
		t.Fatalf("DeliverWS message: %v", err)
	}
	if ack.Code != 200 {
		t.Errorf("message ack code = %d, want 200", ack.Code)
	}
	rec.mu.Lock()
	if len(rec.messages) != 1 {
		t.Fatalf("handler got %d messages, want 1", len(rec.messages))
	}
	m := rec.messages[0]
	rec.mu.Unlock()
	if m.MessageID != "om_1" || m.RootID != "om_card" || m.ThreadID != "omt_1" || m.SenderOpenID != "ou_alice" ||
		len(m.Mentions) != 1 || m.Mentions[0].Name != "Bob" {
		t.Errorf("decoded message = %+v", m)
	}

	ack, err = srv.DeliverWS(ctx, srv.CardActionEvent(feishutest.CardActionSpec{
		OperatorOpenID: "ou_alice", MessageID: "om_card", ChatID: "oc_1",
		Value: map[string]any{"action": "resolve", "issue": "issue_1", "rev": 1},
	}))
	if err != nil {
		t.Fatalf("DeliverWS card action: %v", err)
	}
	if ack.Code != 200 {
		t.Errorf("card ack code = %d, want 200", ack.Code)
	}
	var resp struct {
		Toast struct {
			Type string            `json:"type"`
			I18n map[string]string `json:"i18n"`
		} `json:"toast"`
	}
	if err := json.Unmarshal(ack.Data, &resp); err != nil {
		t.Fatalf("card ack data %q: %v", ack.Data, err)
	}
	if resp.Toast.Type != "success" || resp.Toast.I18n["zh_cn"] != "已解决" {
		t.Errorf("card ack toast = %+v", resp.Toast)
	}
	rec.mu.Lock()
	a := rec.actions[0]
	rec.mu.Unlock()
	if a.Value["action"] != "resolve" || a.OperatorOpenID != "ou_alice" || a.MessageID != "om_card" {
		t.Errorf("decoded action = %+v", a)
	}

	if _, err := srv.DeliverWS(ctx, srv.BotAddedEvent("oc_2", "ou_alice")); err != nil {
		t.Fatalf("DeliverWS bot added: %v", err)
	}
	if _, _, added := rec.counts(); added != 1 {
		t.Errorf("bot added events = %d, want 1", added)
	}
	for _, ev := range [][]byte{srv.BotRemovedEvent("oc_2", "ou_alice"), srv.ChatDisbandedEvent("oc_3", "ou_bob")} {
		if _, err := srv.DeliverWS(ctx, ev); err != nil {
			t.Fatalf("DeliverWS chat event: %v", err)
		}
	}
	rec.mu.Lock()
	removed := slices.Clone(rec.removed)
	rec.mu.Unlock()
	if len(removed) != 2 || removed[0].ChatID != "oc_2" || removed[0].Disbanded || removed[1].ChatID != "oc_3" || !removed[1].Disbanded {
		t.Errorf("removed events = %+v, want oc_2 (removed) and oc_3 (disbanded)", removed)
	}
	assertNoSecret(t, logs.String(), srv.AppSecret)
}

func TestIntakeWSMalformedIsAckedNotDelivered(t *testing.T) {
	srv := feishutest.NewServer(t)
	rec := newRecorder()
	logs := &syncBuffer{}
	in := startWS(t, srv, rec, logs)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	bad := []byte(`{"schema":"2.0","header":{"event_id":"e1","event_type":"im.message.receive_v1"},"event":{"message":{"message_id":17}}}`)
	ack, err := srv.DeliverWS(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Code != 200 {
		t.Errorf("malformed event ack = %d, want 200 (acknowledged, not redelivered)", ack.Code)
	}
	if msgs, _, _ := rec.counts(); msgs != 0 {
		t.Errorf("handler got %d messages from a malformed event", msgs)
	}
	if got := in.Malformed(); got != 1 {
		t.Errorf("Malformed() = %d, want 1", got)
	}
	if !strings.Contains(logs.String(), "malformed") {
		t.Errorf("malformed event not logged; logs:\n%s", logs.String())
	}
}

func TestIntakeWSReconnects(t *testing.T) {
	srv := feishutest.NewServer(t)
	rec := newRecorder()
	in := startWS(t, srv, rec, &syncBuffer{})
	srv.DropConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	waitUntil(t, 15*time.Second, func() bool { return srv.Connected() > 0 && in.Ready() })
	if _, err := srv.DeliverWS(ctx, srv.MessageEvent(feishutest.MessageSpec{MessageID: "om_after", ChatID: "oc_1"})); err != nil {
		t.Fatalf("deliver after reconnect: %v", err)
	}
	if msgs, _, _ := rec.counts(); msgs != 1 {
		t.Errorf("messages after reconnect = %d, want 1", msgs)
	}
}

func TestIntakeWSBadCredentialsFailsRun(t *testing.T) {
	srv := feishutest.NewServer(t)
	in, err := feishu.NewIntake(feishu.IntakeConfig{
		AppID: srv.AppID, AppSecret: "wrong-secret-ABC", BaseURL: srv.URL, Mode: feishu.ModeWS,
	}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = in.Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run with bad credentials = %v (ctx %v), want an error before the deadline", err, ctx.Err())
	}
	assertNoSecret(t, err.Error(), "wrong-secret-ABC")
}

const (
	testEncryptKey = "encrypt-key-SECRET-9"
	testVToken     = "vt-test"
)

func startHTTP(t *testing.T, h feishu.Handler, now func() time.Time, logs *syncBuffer) (*feishu.Intake, string) {
	t.Helper()
	in, err := feishu.NewIntake(feishu.IntakeConfig{
		Mode: feishu.ModeHTTP, EncryptKey: testEncryptKey, VerificationToken: testVToken,
		Logger: testLogger(t, logs), Now: now,
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(in)
	t.Cleanup(hs.Close)
	return in, hs.URL + "/feishu/events"
}

func TestIntakeHTTP(t *testing.T) {
	srv := feishutest.NewServer(t)
	event := func(id string) []byte {
		return srv.MessageEvent(feishutest.MessageSpec{MessageID: id, ChatID: "oc_1", SenderOpenID: "ou_alice",
			Content: feishutest.TextContent("hi")})
	}
	tests := []struct {
		name       string
		payload    []byte
		opts       feishutest.HTTPOptions
		wantStatus int
		wantMsgs   int
	}{
		{"signed and fresh", event("om_ok"), feishutest.HTTPOptions{EncryptKey: testEncryptKey}, 200, 1},
		{"forged signature", event("om_forged"), feishutest.HTTPOptions{EncryptKey: testEncryptKey, BadSignature: true}, 401, 0},
		{"wrong key", event("om_wrongkey"), feishutest.HTTPOptions{EncryptKey: "another-key"}, 401, 0},
		{"stale timestamp", event("om_stale"), feishutest.HTTPOptions{EncryptKey: testEncryptKey, Timestamp: time.Now().Add(-6 * time.Minute)}, 401, 0},
		{"future timestamp", event("om_future"), feishutest.HTTPOptions{EncryptKey: testEncryptKey, Timestamp: time.Now().Add(6 * time.Minute)}, 401, 0},
		{"unsigned", event("om_unsigned"), feishutest.HTTPOptions{EncryptKey: testEncryptKey, NoSignature: true}, 401, 0},
		{"unencrypted", event("om_plain"), feishutest.HTTPOptions{EncryptKey: testEncryptKey, Plain: true}, 400, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			logs := &syncBuffer{}
			_, url := startHTTP(t, rec, time.Now, logs)
			status, body, err := srv.DeliverHTTP(t.Context(), url, tt.payload, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus {
				t.Errorf("status = %d (%s), want %d", status, body, tt.wantStatus)
			}
			if msgs, _, _ := rec.counts(); msgs != tt.wantMsgs {
				t.Errorf("handler got %d messages, want %d", msgs, tt.wantMsgs)
			}
			assertNoSecret(t, logs.String()+string(body), testEncryptKey)
		})
	}
}

func TestIntakeHTTPChallengeAndCardAction(t *testing.T) {
	srv := feishutest.NewServer(t)
	rec := newRecorder()
	_, url := startHTTP(t, rec, time.Now, &syncBuffer{})

	// The url_verification challenge may come unsigned; it is answered, nothing else runs.
	status, body, err := srv.DeliverHTTP(t.Context(), url, feishutest.URLVerification(testVToken, "ch-123"),
		feishutest.HTTPOptions{EncryptKey: testEncryptKey, NoSignature: true})
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 || !strings.Contains(string(body), "ch-123") {
		t.Errorf("challenge answer = %d %s, want 200 with the challenge", status, body)
	}
	// A challenge with a wrong verification token is refused.
	status, _, _ = srv.DeliverHTTP(t.Context(), url, feishutest.URLVerification("wrong-token", "ch-9"),
		feishutest.HTTPOptions{EncryptKey: testEncryptKey, NoSignature: true})
	if status == 200 {
		t.Errorf("challenge with a wrong token answered 200")
	}

	status, body, err = srv.DeliverHTTP(t.Context(), url, srv.CardActionEvent(feishutest.CardActionSpec{
		OperatorOpenID: "ou_alice", MessageID: "om_card", ChatID: "oc_1", Value: map[string]any{"action": "resolve"},
	}), feishutest.HTTPOptions{EncryptKey: testEncryptKey})
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 || !strings.Contains(string(body), `"toast"`) {
		t.Errorf("card action answer = %d %s, want 200 with a toast", status, body)
	}
	if _, actions, _ := rec.counts(); actions != 1 {
		t.Errorf("card actions = %d, want 1", actions)
	}

	status, _, err = srv.DeliverHTTP(t.Context(), url, srv.BotAddedEvent("oc_9", "ou_alice"),
		feishutest.HTTPOptions{EncryptKey: testEncryptKey})
	if err != nil || status != 200 {
		t.Fatalf("bot added over http = %d, %v", status, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.added) != 1 || rec.added[0].ChatID != "oc_9" {
		t.Errorf("bot added events = %+v, want one for oc_9", rec.added)
	}
}

func TestNewIntakeRefusesHTTPWithoutEncryptKey(t *testing.T) {
	_, err := feishu.NewIntake(feishu.IntakeConfig{Mode: feishu.ModeHTTP, VerificationToken: "vt"}, newRecorder())
	if err == nil || !strings.Contains(err.Error(), "encrypt key") {
		t.Errorf("NewIntake(http, no key) = %v, want an error about the encrypt key", err)
	}
}
