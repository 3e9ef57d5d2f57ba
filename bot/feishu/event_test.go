package feishu

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
)

func TestDecodeMessage(t *testing.T) {
	body := []byte(`{"schema":"2.0","header":{"event_id":"ev1","event_type":"im.message.receive_v1","create_time":"1700000000123","token":"vt","app_id":"cli_x","tenant_key":"tk"},
	"event":{"sender":{"sender_id":{"union_id":"on_1","user_id":"u1","open_id":"ou_alice"},"sender_type":"user","tenant_key":"tk"},
	"message":{"message_id":"om_reply","root_id":"om_card","parent_id":"om_card","thread_id":"omt_1","create_time":"1700000000000","update_time":"1700000000000",
	"chat_id":"oc_1","chat_type":"group","message_type":"text","content":"{\"text\":\"@_user_1 restarted db-1\"}",
	"mentions":[{"key":"@_user_1","id":{"union_id":"on_b","user_id":"","open_id":"ou_bob"},"name":"Bob","tenant_key":"tk"}]}}}`)
	got, ok := decodeMessage(body)
	if !ok {
		t.Fatal("decodeMessage: not ok")
	}
	want := Message{
		EventID: "ev1", MessageID: "om_reply", RootID: "om_card", ParentID: "om_card", ThreadID: "omt_1",
		ChatID: "oc_1", ChatType: "group", MessageType: "text", Content: `{"text":"@_user_1 restarted db-1"}`,
		SenderOpenID: "ou_alice", SenderType: "user",
		Mentions:   []Mention{{Key: "@_user_1", OpenID: "ou_bob", Name: "Bob"}},
		CreateTime: time.UnixMilli(1700000000000), EventTime: time.UnixMilli(1700000000123),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decodeMessage mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeMessageMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"not json":        `{"schema":`,
		"no event":        `{"schema":"2.0","header":{"event_type":"im.message.receive_v1"}}`,
		"no message":      `{"schema":"2.0","event":{"sender":{}}}`,
		"no message id":   `{"schema":"2.0","event":{"message":{"chat_id":"oc_1"}}}`,
		"wrong type":      `{"schema":"2.0","event":{"message":{"message_id":42}}}`,
		"mentions broken": `{"schema":"2.0","event":{"message":{"message_id":"om_1","chat_id":"oc_1","mentions":"x"}}}`,
	} {
		if _, ok := decodeMessage([]byte(body)); ok {
			t.Errorf("decodeMessage(%s) ok, want malformed", name)
		}
	}
}

func TestCallbackResponseNeverNull(t *testing.T) {
	b, err := json.Marshal(callbackResponse(CardResponse{}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "{}"; got != want {
		t.Errorf("empty response = %s, want %s", got, want)
	}
	b, _ = json.Marshal(callbackResponse(CardResponse{
		Toast: &Toast{Type: "success", ZhCN: "已解决", EnUS: "Resolved"},
		Card:  json.RawMessage(`{"schema":"2.0"}`),
	}))
	want := `{"toast":{"type":"success","content":"Resolved","i18n":{"en_us":"Resolved","zh_cn":"已解决"}},"card":{"type":"raw","data":{"schema":"2.0"}}}`
	if string(b) != want {
		t.Errorf("response = %s\nwant       %s", b, want)
	}
}

func TestValidSignature(t *testing.T) {
	body := []byte(`{"encrypt":"x"}`)
	// The SDK's own signer is the reference implementation.
	sig := larkevent.Signature("1700000000", "nonce", "key", string(body))
	if !validSignature(sig, "1700000000", "nonce", "key", body) {
		t.Error("validSignature refused the SDK's signature")
	}
	for name, args := range map[string][4]string{
		"other timestamp": {sig, "1700000001", "nonce", "key"},
		"other nonce":     {sig, "1700000000", "nonce2", "key"},
		"other key":       {sig, "1700000000", "nonce", "key2"},
		"empty":           {"", "1700000000", "nonce", "key"},
	} {
		if validSignature(args[0], args[1], args[2], args[3], body) {
			t.Errorf("validSignature accepted %s", name)
		}
	}
	if validSignature(sig, "1700000000", "nonce", "key", []byte(`{"encrypt":"y"}`)) {
		t.Error("validSignature accepted another body")
	}
}

func TestEventTimeUnits(t *testing.T) {
	want := time.Date(2026, 12, 1, 9, 30, 0, 123456000, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"1796117400123456", want},                         // card.action.trigger: µs
		{"1796117400123", want.Truncate(time.Millisecond)}, // events: ms
		{"1796117400", want.Truncate(time.Second)},         // seconds
		{"", time.Time{}},
		{"-5", time.Time{}},
		{"soon", time.Time{}},
	} {
		if got := msTime(tt.in); !got.Equal(tt.want) {
			t.Errorf("msTime(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
