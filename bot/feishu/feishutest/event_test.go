package feishutest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	"github.com/larksuite/oapi-sdk-go/v3/core/httpserverext"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"

	"issuebot/bot/feishu/feishutest"
)

func TestDeliverHTTP(t *testing.T) {
	const key = "encrypt-key-test"
	srv := feishutest.NewServer(t)
	got := make(chan *larkim.P2MessageReceiveV1, 10)
	bot := httptest.NewServer(http.HandlerFunc(httpserverext.NewEventHandlerFunc(testDispatcher("vt-test", key, got),
		larkevent.WithLogLevel(larkcore.LogLevelError))))
	t.Cleanup(bot.Close)

	// Only recorded, not delivered: the root the next event replies to.
	srv.MessageEvent(feishutest.MessageSpec{MessageID: "om_card", ChatID: "oc_1", SenderOpenID: "ou_alice", Content: feishutest.TextContent("root")})
	status, body, err := srv.DeliverHTTP(t.Context(), bot.URL, srv.MessageEvent(feishutest.MessageSpec{
		ChatID: "oc_1", RootID: "om_card", SenderOpenID: "ou_bob", Content: feishutest.TextContent("in thread"),
	}), feishutest.HTTPOptions{EncryptKey: key})
	if err != nil || status != http.StatusOK {
		t.Fatalf("signed event: %d %s %v", status, body, err)
	}
	e := <-got
	if p := larkcore.StringValue(e.Event.Message.ParentId); p != "om_card" {
		t.Errorf("parent_id = %q, want om_card", p)
	}

	status, body, err = srv.DeliverHTTP(t.Context(), bot.URL, srv.CardActionEvent(feishutest.CardActionSpec{
		OperatorOpenID: "ou_alice", MessageID: "om_card", Value: map[string]any{"issue": "iss-1"},
	}), feishutest.HTTPOptions{EncryptKey: key})
	if err != nil || status != http.StatusOK {
		t.Fatalf("card callback: %d %s %v", status, body, err)
	}
	var resp struct{ Toast struct{ Content string } }
	if err := json.Unmarshal(body, &resp); err != nil || resp.Toast.Content != "resolved iss-1 in oc_1" {
		t.Errorf("card callback answer = %s", body)
	}

	status, body, err = srv.DeliverHTTP(t.Context(), bot.URL, feishutest.URLVerification("vt-test", "ch-1"), feishutest.HTTPOptions{EncryptKey: key})
	if err != nil || status != http.StatusOK || string(body) != `{"challenge":"ch-1"}` {
		t.Errorf("challenge: %d %s %v", status, body, err)
	}

	for name, o := range map[string]feishutest.HTTPOptions{
		"bad signature": {EncryptKey: key, BadSignature: true},
		"no signature":  {EncryptKey: key, NoSignature: true},
		"plain":         {EncryptKey: key, Plain: true},
		"wrong key":     {EncryptKey: "another-key"},
	} {
		ev := srv.MessageEvent(feishutest.MessageSpec{ChatID: "oc_1", SenderOpenID: "ou_alice", Content: feishutest.TextContent("forged")})
		status, body, err := srv.DeliverHTTP(t.Context(), bot.URL, ev, o)
		if err != nil || status == http.StatusOK {
			t.Errorf("%s: %d %s %v, want a rejection", name, status, body, err)
		}
	}
	select {
	case e := <-got:
		t.Errorf("a rejected event reached the handler: %s", larkcore.StringValue(e.Event.Message.Content))
	default:
	}

	// The SDK does not check freshness; an old, correctly signed event is accepted.
	status, _, _ = srv.DeliverHTTP(t.Context(), bot.URL, srv.MessageEvent(feishutest.MessageSpec{ChatID: "oc_1", Content: feishutest.TextContent("old")}),
		feishutest.HTTPOptions{EncryptKey: key, Timestamp: time.Now().Add(-time.Hour)})
	if status != http.StatusOK {
		t.Errorf("old event: %d", status)
	}
}

func TestMessageEventShape(t *testing.T) {
	srv := feishutest.NewServer(t)
	at := time.UnixMilli(1700000000000)
	ev := srv.MessageEvent(feishutest.MessageSpec{
		EventID: "ev-1", MessageID: "om_x", RootID: "om_card", ThreadID: "omt_1", ChatID: "oc_1",
		SenderOpenID: "ou_alice", Content: feishutest.TextContent("@_user_1 hi"), CreateTime: at,
		Mentions: []feishutest.Mention{{Key: "@_user_1", OpenID: "ou_bob", Name: "Bob"}},
	})
	var got map[string]any
	if err := json.Unmarshal(ev, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"schema": "2.0",
		"header": map[string]any{
			"event_id": "ev-1", "event_type": "im.message.receive_v1", "create_time": "1700000000000",
			"token": "vt-test", "app_id": srv.AppID, "tenant_key": "tenant_test",
		},
		"event": map[string]any{
			"sender": map[string]any{
				"sender_id":   map[string]any{"open_id": "ou_alice", "union_id": "on_alice"},
				"sender_type": "user", "tenant_key": "tenant_test",
			},
			"message": map[string]any{
				"message_id": "om_x", "root_id": "om_card", "parent_id": "om_card", "thread_id": "omt_1",
				"create_time": "1700000000000", "update_time": "1700000000000", "chat_id": "oc_1",
				"chat_type": "group", "message_type": "text", "content": `{"text":"@_user_1 hi"}`,
				"mentions": []any{map[string]any{
					"key": "@_user_1", "id": map[string]any{"open_id": "ou_bob", "union_id": "on_bob"},
					"name": "Bob", "tenant_key": "tenant_test", "mentioned_type": "user",
				}},
			},
		},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("MessageEvent =\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}
