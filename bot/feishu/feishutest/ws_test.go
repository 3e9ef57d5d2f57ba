package feishutest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher/callback"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
	larkws "github.com/larksuite/oapi-sdk-go/v3/ws"

	"issuebot/bot/feishu/feishutest"
)

func testDispatcher(verificationToken, encryptKey string, got chan<- *larkim.P2MessageReceiveV1) *dispatcher.EventDispatcher {
	return dispatcher.NewEventDispatcher(verificationToken, encryptKey).
		OnP2MessageReceiveV1(func(_ context.Context, e *larkim.P2MessageReceiveV1) error {
			got <- e
			return nil
		}).
		OnP2CardActionTrigger(func(_ context.Context, e *callback.CardActionTriggerEvent) (*callback.CardActionTriggerResponse, error) {
			issue, _ := e.Event.Action.Value["issue"].(string)
			return &callback.CardActionTriggerResponse{
				Toast: &callback.Toast{Type: "success", Content: "resolved " + issue + " in " + e.Event.Context.OpenChatID},
			}, nil
		})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestLongConnection(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	got := make(chan *larkim.P2MessageReceiveV1, 1)
	cli := larkws.NewClient(srv.AppID, srv.AppSecret,
		larkws.WithEventHandler(testDispatcher("", "", got)),
		larkws.WithDomain(srv.URL),
		larkws.WithAutoReconnect(true),
		larkws.WithLogLevel(larkcore.LogLevelError))
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan error, 1)
	go func() { started <- cli.Start(ctx) }()

	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	if err := srv.WaitConnected(wait); err != nil {
		t.Fatal(err)
	}

	ev := srv.MessageEvent(feishutest.MessageSpec{
		ChatID: "oc_1", SenderOpenID: "ou_alice", Content: feishutest.TextContent("@_user_1 hi"),
		Mentions: []feishutest.Mention{{Key: "@_user_1", OpenID: srv.BotOpenID}},
	})
	ack, err := srv.DeliverWS(wait, ev)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Code != 200 || ack.Data != nil {
		t.Errorf("message ack = %d %q, want 200 and no data", ack.Code, ack.Data)
	}
	e := <-got
	msg := e.Event.Message
	if larkcore.StringValue(msg.ChatId) != "oc_1" || larkcore.StringValue(msg.Content) != `{"text":"@_user_1 hi"}` ||
		larkcore.StringValue(e.Event.Sender.SenderId.OpenId) != "ou_alice" || e.EventV2Base.Header.EventType != "im.message.receive_v1" ||
		e.EventV2Base.Header.Token != "vt-test" || e.EventV2Base.Header.AppID != srv.AppID {
		t.Errorf("event = %s", larkcore.Prettify(e.Event))
	}
	if len(msg.Mentions) != 1 || larkcore.StringValue(msg.Mentions[0].MentionedType) != "bot" ||
		larkcore.StringValue(msg.Mentions[0].Name) != "issuebot" || larkcore.StringValue(msg.Mentions[0].Id.OpenId) != srv.BotOpenID {
		t.Errorf("mentions = %s", larkcore.Prettify(msg.Mentions))
	}
	if _, ok := srv.Message(larkcore.StringValue(msg.MessageId)); !ok {
		t.Error("the user's message is not recorded")
	}

	ack, err = srv.DeliverWS(wait, srv.CardActionEvent(feishutest.CardActionSpec{
		OperatorOpenID: "ou_alice", MessageID: "om_card", ChatID: "oc_1", Value: map[string]any{"issue": "iss-1"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"toast":{"type":"success","content":"resolved iss-1 in oc_1"}}`; ack.Code != 200 || string(ack.Data) != want {
		t.Errorf("card ack = %d %s, want 200 %s", ack.Code, ack.Data, want)
	}

	// No handler for this type: the SDK acks 500 so the platform redelivers.
	ack, err = srv.DeliverWS(wait, srv.BotAddedEvent("oc_2", "ou_alice"))
	if err != nil || ack.Code != 500 {
		t.Errorf("unhandled event ack = %d, %v, want 500", ack.Code, err)
	}

	eventually(t, "a ping", func() bool { return srv.Pings() > 0 })

	srv.DropConnections()
	if n := srv.Connected(); n != 0 {
		t.Errorf("Connected after drop = %d", n)
	}
	if err := srv.WaitConnected(wait); err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	if n := srv.Connects(); n != 2 {
		t.Errorf("Connects = %d, want 2", n)
	}
	if ack, err := srv.DeliverWS(wait, srv.MessageEvent(feishutest.MessageSpec{ChatID: "oc_1", SenderOpenID: "ou_alice", Content: feishutest.TextContent("again")})); err != nil || ack.Code != 200 {
		t.Errorf("after reconnect: ack %d, %v", ack.Code, err)
	}
	<-got

	cancel()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
	eventually(t, "the connection to close", func() bool { return srv.Connected() == 0 })
	if _, err := srv.DeliverWS(wait, ev); err == nil {
		t.Error("DeliverWS with no client: no error")
	}
}

func TestLongConnectionWrongSecret(t *testing.T) {
	srv := feishutest.NewServer(t)
	cli := larkws.NewClient(srv.AppID, "wrong",
		larkws.WithDomain(srv.URL), larkws.WithAutoReconnect(true), larkws.WithLogLevel(larkcore.LogLevelError))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := cli.Start(ctx)
	var ce *larkws.ClientError
	if !errors.As(err, &ce) || ce.Code != feishutest.CodeWSAuthFailed {
		t.Errorf("Start = %v, want a ClientError %d", err, feishutest.CodeWSAuthFailed)
	}
	if srv.Connects() != 0 {
		t.Error("connected with a wrong secret")
	}
}

func TestDeliverWSTimesOut(t *testing.T) {
	srv := feishutest.NewServer(t)
	release := make(chan struct{})
	d := dispatcher.NewEventDispatcher("", "").OnP2MessageReceiveV1(func(context.Context, *larkim.P2MessageReceiveV1) error {
		<-release
		return nil
	})
	cli := larkws.NewClient(srv.AppID, srv.AppSecret, larkws.WithEventHandler(d),
		larkws.WithDomain(srv.URL), larkws.WithLogLevel(larkcore.LogLevelError))
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan error, 1)
	go func() { started <- cli.Start(ctx) }()
	defer func() { close(release); cancel(); <-started }()

	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	if err := srv.WaitConnected(wait); err != nil {
		t.Fatal(err)
	}
	short, stopShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer stopShort()
	_, err := srv.DeliverWS(short, srv.MessageEvent(feishutest.MessageSpec{ChatID: "oc_1", Content: feishutest.TextContent("slow")}))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ack") {
		t.Errorf("DeliverWS = %v, want a deadline error", err)
	}
}
