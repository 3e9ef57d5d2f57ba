package feishutest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	lark "github.com/larksuite/oapi-sdk-go/v3"
	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkcontact "github.com/larksuite/oapi-sdk-go/v3/service/contact/v3"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"

	"issuebot/bot/feishu/feishutest"
)

const card = `{"schema":"2.0","config":{"update_multi":true},"body":{"elements":[{"tag":"markdown","content":"hi"}]}}`

func newClient(srv *feishutest.Server) *lark.Client {
	return lark.NewClient(srv.AppID, srv.AppSecret,
		lark.WithOpenBaseUrl(srv.URL),
		lark.WithReqTimeout(5*time.Second),
		lark.WithLogLevel(larkcore.LogLevelError))
}

func create(t *testing.T, cli *lark.Client, chatID, msgType, content, uuid string) *larkim.CreateMessageResp {
	t.Helper()
	body := larkim.NewCreateMessageReqBodyBuilder().ReceiveId(chatID).MsgType(msgType).Content(content)
	if uuid != "" {
		body.Uuid(uuid)
	}
	resp, err := cli.Im.V1.Message.Create(t.Context(),
		larkim.NewCreateMessageReqBuilder().ReceiveIdType("chat_id").Body(body.Build()).Build())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return resp
}

func TestCreateReplyPatchReact(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	cli := newClient(srv)
	ctx := t.Context()

	resp := create(t, cli, "oc_1", "interactive", card, "u-1")
	if !resp.Success() {
		t.Fatalf("Create: code %d %s", resp.Code, resp.Msg)
	}
	cardID := larkcore.StringValue(resp.Data.MessageId)
	if cardID != "om_1" {
		t.Errorf("first message_id = %q, want om_1", cardID)
	}
	if resp.RequestId() == "" {
		t.Error("no X-Tt-Logid")
	}
	if got := larkcore.StringValue(resp.Data.ChatId); got != "oc_1" {
		t.Errorf("chat_id = %q, want oc_1", got)
	}

	again := create(t, cli, "oc_1", "interactive", card, "u-1")
	if got := larkcore.StringValue(again.Data.MessageId); got != cardID {
		t.Errorf("same uuid: message_id = %q, want %q", got, cardID)
	}
	if n := len(srv.Messages("oc_1")); n != 1 {
		t.Errorf("after a repeated uuid, %d messages, want 1", n)
	}

	reply := func(target, text, uuid string) *larkim.ReplyMessageResp {
		t.Helper()
		r, err := cli.Im.V1.Message.Reply(ctx, larkim.NewReplyMessageReqBuilder().MessageId(target).
			Body(larkim.NewReplyMessageReqBodyBuilder().MsgType("text").Content(feishutest.TextContent(text)).
				ReplyInThread(true).Uuid(uuid).Build()).Build())
		if err != nil {
			t.Fatalf("Reply: %v", err)
		}
		if !r.Success() {
			t.Fatalf("Reply: code %d %s", r.Code, r.Msg)
		}
		return r
	}
	r1 := reply(cardID, "first", "u-2")
	threadID := larkcore.StringValue(r1.Data.ThreadId)
	if !strings.HasPrefix(threadID, "omt_") {
		t.Fatalf("thread_id = %q, want omt_…", threadID)
	}
	if root, parent := larkcore.StringValue(r1.Data.RootId), larkcore.StringValue(r1.Data.ParentId); root != cardID || parent != cardID {
		t.Errorf("root_id, parent_id = %q, %q, want %q twice", root, parent, cardID)
	}
	r2 := reply(larkcore.StringValue(r1.Data.MessageId), "second", "u-3")
	if got := larkcore.StringValue(r2.Data.ThreadId); got != threadID {
		t.Errorf("second reply thread_id = %q, want %q", got, threadID)
	}
	if got := larkcore.StringValue(r2.Data.ParentId); got != cardID {
		t.Errorf("second reply parent_id = %q, want the root %q", got, cardID)
	}
	if m, _ := srv.Message(cardID); m.ThreadID != threadID {
		t.Errorf("card thread = %q, want %q", m.ThreadID, threadID)
	}

	unknown, err := cli.Im.V1.Message.Reply(ctx, larkim.NewReplyMessageReqBuilder().MessageId("om_nope").
		Body(larkim.NewReplyMessageReqBodyBuilder().MsgType("text").Content(feishutest.TextContent("x")).Build()).Build())
	if err != nil || unknown.Code != feishutest.CodeMessageNotFound {
		t.Errorf("reply to unknown message: err %v, code %d, want %d", err, unknown.Code, feishutest.CodeMessageNotFound)
	}

	patched := strings.Replace(card, `"hi"`, `"resolved"`, 1)
	pr, err := cli.Im.V1.Message.Patch(ctx, larkim.NewPatchMessageReqBuilder().MessageId(cardID).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(patched).Build()).Build())
	if err != nil || !pr.Success() {
		t.Fatalf("Patch: err %v, resp %+v", err, pr)
	}
	textPatch, err := cli.Im.V1.Message.Patch(ctx, larkim.NewPatchMessageReqBuilder().MessageId(larkcore.StringValue(r1.Data.MessageId)).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(patched).Build()).Build())
	if err != nil || textPatch.Code != feishutest.CodeInvalidParam {
		t.Errorf("patch a text message: err %v, code %d, want %d", err, textPatch.Code, feishutest.CodeInvalidParam)
	}

	rr, err := cli.Im.V1.MessageReaction.Create(ctx, larkim.NewCreateMessageReactionReqBuilder().MessageId(cardID).
		Body(larkim.NewCreateMessageReactionReqBodyBuilder().
			ReactionType(larkim.NewEmojiBuilder().EmojiType("DONE").Build()).Build()).Build())
	if err != nil || !rr.Success() {
		t.Fatalf("reaction: err %v, resp %+v", err, rr)
	}
	if got := larkcore.StringValue(rr.Data.ReactionType.EmojiType); got != "DONE" {
		t.Errorf("reaction emoji = %q, want DONE", got)
	}

	m, ok := srv.Message(cardID)
	if !ok {
		t.Fatal("card not recorded")
	}
	if m.Content != patched || len(m.Patches) != 1 || len(m.Reactions) != 1 || m.Reactions[0] != "DONE" || m.UUID != "u-1" {
		t.Errorf("card = %+v", m)
	}
	if n := len(srv.Messages("oc_1")); n != 3 {
		t.Errorf("%d messages in oc_1, want 3", n)
	}
	if n := srv.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}
}

func TestCreateRejects(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	cli := newClient(srv)

	tests := []struct {
		name, chat, msgType, content string
		want                         int
	}{
		{"bot not in chat", "oc_other", "text", feishutest.TextContent("x"), feishutest.CodeBotNotInChat},
		{"card not JSON", "oc_1", "interactive", "{nope", feishutest.CodeInvalidParam},
		{"card too big", "oc_1", "interactive", `{"x":"` + strings.Repeat("a", feishutest.MaxCardBytes) + `"}`, feishutest.CodeContentTooLong},
		{"text too big", "oc_1", "text", feishutest.TextContent(strings.Repeat("a", feishutest.MaxTextBytes)), feishutest.CodeContentTooLong},
		{"text without text", "oc_1", "text", `{"x":1}`, feishutest.CodeInvalidParam},
	}
	for _, tt := range tests {
		resp := create(t, cli, tt.chat, tt.msgType, tt.content, "")
		if resp.Code != tt.want {
			t.Errorf("%s: code %d (%s), want %d", tt.name, resp.Code, resp.Msg, tt.want)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", tt.name, resp.StatusCode)
		}
	}
	if n := len(srv.Messages("oc_1")); n != 0 {
		t.Errorf("%d messages recorded, want 0", n)
	}
}

func TestPatchWindow(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	srv := feishutest.NewServer(t, feishutest.WithNow(func() time.Time { return now }))
	srv.AddChat("oc_1")
	cli := newClient(srv)
	id := larkcore.StringValue(create(t, cli, "oc_1", "interactive", card, "").Data.MessageId)

	now = now.Add(feishutest.PatchWindow + time.Minute)
	resp, err := cli.Im.V1.Message.Patch(t.Context(), larkim.NewPatchMessageReqBuilder().MessageId(id).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(card).Build()).Build())
	if err != nil || resp.Code != feishutest.CodePatchWindowExpired {
		t.Errorf("patch after 14 days: err %v, code %d, want %d", err, resp.Code, feishutest.CodePatchWindowExpired)
	}
}

func TestChatRateLimit(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.RateWindow = time.Minute
	srv.AddChat("oc_1")
	srv.AddChat("oc_2")
	cli := newClient(srv)

	var codes []int
	for range 6 {
		codes = append(codes, create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "").Code)
	}
	for i, c := range codes[:5] {
		if c != 0 {
			t.Errorf("send %d: code %d, want 0", i+1, c)
		}
	}
	if codes[5] != feishutest.CodeChatRateLimited {
		t.Errorf("6th send: code %d, want %d (codes %v)", codes[5], feishutest.CodeChatRateLimited, codes)
	}
	if c := create(t, cli, "oc_2", "text", feishutest.TextContent("x"), "").Code; c != 0 {
		t.Errorf("send to another chat: code %d, want 0", c)
	}
	if n := srv.Throttled(); n != 1 {
		t.Errorf("Throttled = %d, want 1", n)
	}
}

func TestAppRateLimit(t *testing.T) {
	srv := feishutest.NewServer(t, feishutest.WithRateLimits(0, 0, 3))
	srv.RateWindow = time.Minute
	cli := newClient(srv)
	var last *larkcore.ApiResp
	for range 4 {
		resp, err := cli.Get(t.Context(), "/open-apis/bot/v3/info", nil, larkcore.AccessTokenTypeTenant)
		if err != nil {
			t.Fatal(err)
		}
		last = resp
	}
	if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("x-ogw-ratelimit-reset") != "1" ||
		last.Header.Get("x-ogw-ratelimit-limit") != "3" {
		t.Errorf("4th call: HTTP %d, headers %v", last.StatusCode, last.Header)
	}
	var body struct{ Code int }
	json.Unmarshal(last.RawBody, &body)
	if body.Code != feishutest.CodeRateLimited {
		t.Errorf("4th call code = %d, want %d", body.Code, feishutest.CodeRateLimited)
	}
}

func TestUsersAndBotInfo(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddUser("ou_alice", "Alice")
	cli := newClient(srv)
	get := func(id string) *larkcontact.GetUserResp {
		t.Helper()
		resp, err := cli.Contact.V3.User.Get(t.Context(), larkcontact.NewGetUserReqBuilder().UserId(id).UserIdType("open_id").Build())
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if got := larkcore.StringValue(get("ou_alice").Data.User.Name); got != "Alice" {
		t.Errorf("name = %q, want Alice", got)
	}
	get("ou_alice")
	if c := get("ou_bob").Code; c != feishutest.CodeNoUserAuthority {
		t.Errorf("unknown user: code %d, want %d", c, feishutest.CodeNoUserAuthority)
	}
	if n := srv.UserLookups("ou_alice"); n != 2 {
		t.Errorf("UserLookups = %d, want 2", n)
	}

	resp, err := cli.Get(t.Context(), "/open-apis/bot/v3/info", nil, larkcore.AccessTokenTypeTenant)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Code int
		Bot  struct {
			OpenID  string `json:"open_id"`
			AppName string `json:"app_name"`
		}
	}
	if err := json.Unmarshal(resp.RawBody, &info); err != nil {
		t.Fatal(err)
	}
	if info.Code != 0 || info.Bot.OpenID != "ou_bot" || info.Bot.AppName != "issuebot" {
		t.Errorf("bot info = %+v", info)
	}
}

func TestInvalidateTokens(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	cli := newClient(srv)
	if c := create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "").Code; c != 0 {
		t.Fatalf("code %d", c)
	}
	srv.InvalidateTokens()
	resp := create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "")
	if resp.Code != feishutest.CodeTokenInvalid || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("with a stale token: HTTP %d code %d, want 400 %d", resp.StatusCode, resp.Code, feishutest.CodeTokenInvalid)
	}
	// The SDK retries once with the same cached token and does not fetch a new one.
	if n := srv.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}

	tok, err := cli.GetTenantAccessTokenBySelfBuiltApp(t.Context(), &larkcore.SelfBuiltTenantAccessTokenReq{AppID: srv.AppID, AppSecret: srv.AppSecret})
	if err != nil || tok.TenantAccessToken == "" {
		t.Fatalf("fresh token: %v %+v", err, tok)
	}
	fresh, err := cli.Im.V1.Message.Create(t.Context(), larkim.NewCreateMessageReqBuilder().ReceiveIdType("chat_id").
		Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId("oc_1").MsgType("text").Content(feishutest.TextContent("y")).Build()).Build(),
		larkcore.WithTenantAccessToken(tok.TenantAccessToken))
	if err != nil || !fresh.Success() {
		t.Errorf("with a fresh token: err %v, resp %+v", err, fresh)
	}

	bad, err := cli.GetTenantAccessTokenBySelfBuiltApp(t.Context(), &larkcore.SelfBuiltTenantAccessTokenReq{AppID: srv.AppID, AppSecret: "wrong"})
	if err != nil || bad.Code != feishutest.CodeAppSecretInvalid {
		t.Errorf("wrong secret: err %v, code %d, want %d", err, bad.Code, feishutest.CodeAppSecretInvalid)
	}
}

func TestFaults(t *testing.T) {
	srv := feishutest.NewServer(t)
	srv.AddChat("oc_1")
	cli := newClient(srv)

	srv.FailNext(1, http.StatusBadGateway, 1)
	if resp := create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "k1"); resp.StatusCode != http.StatusBadGateway || resp.Code != 1 {
		t.Errorf("FailNext: HTTP %d code %d", resp.StatusCode, resp.Code)
	}
	if n := len(srv.Messages("oc_1")); n != 0 {
		t.Fatalf("FailNext sent %d messages", n)
	}

	srv.LoseResponses(1)
	lost := create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "k2")
	if lost.StatusCode != http.StatusInternalServerError || lost.Code != feishutest.CodeInternal {
		t.Errorf("LoseResponses: HTTP %d code %d", lost.StatusCode, lost.Code)
	}
	msgs := srv.Messages("oc_1")
	if len(msgs) != 1 {
		t.Fatalf("after a lost response, %d messages, want 1", len(msgs))
	}
	retry := create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "k2")
	if got := larkcore.StringValue(retry.Data.MessageId); got != msgs[0].ID {
		t.Errorf("retry got %q, want the lost message %q", got, msgs[0].ID)
	}

	srv.DropResponses(1)
	_, err := cli.Im.V1.Message.Create(t.Context(), larkim.NewCreateMessageReqBuilder().ReceiveIdType("chat_id").
		Body(larkim.NewCreateMessageReqBodyBuilder().ReceiveId("oc_1").MsgType("text").Content(feishutest.TextContent("d")).Uuid("k3").Build()).Build())
	if err == nil {
		t.Error("DropResponses: no transport error")
	}
	if n := len(srv.Messages("oc_1")); n != 2 {
		t.Errorf("after a dropped response, %d messages, want 2", n)
	}

	srv.Fail = func(r *http.Request) (int, string, bool) {
		return http.StatusServiceUnavailable, `{"code":1,"msg":"busy"}`, r.Method == http.MethodPatch
	}
	pr, err := cli.Im.V1.Message.Patch(t.Context(), larkim.NewPatchMessageReqBuilder().MessageId(msgs[0].ID).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(card).Build()).Build())
	if err != nil || pr.StatusCode != http.StatusServiceUnavailable || pr.Code != 1 {
		t.Errorf("Fail hook: err %v, resp %+v", err, pr)
	}
	srv.Fail = nil

	reqs := srv.Requests()
	if last := reqs[len(reqs)-1]; last.Method != http.MethodPatch || last.Status != http.StatusServiceUnavailable || last.Code != 1 {
		t.Errorf("last request = %+v", last)
	}
}

func TestFailRateIsDeterministic(t *testing.T) {
	run := func() []int {
		srv := feishutest.NewServer(t, feishutest.WithRateLimits(0, 0, 0))
		srv.AddChat("oc_1")
		srv.FailRate(0.5, 7)
		cli := newClient(srv)
		var codes []int
		for range 10 {
			codes = append(codes, create(t, cli, "oc_1", "text", feishutest.TextContent("x"), "").Code)
		}
		return codes
	}
	a, b := run(), run()
	failed := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("runs differ: %v vs %v", a, b)
		}
		if a[i] == feishutest.CodeInternal {
			failed++
		}
	}
	if failed == 0 || failed == len(a) {
		t.Errorf("FailRate(0.5): %d of %d failed", failed, len(a))
	}
}

func TestUnhandledRouteFailsTheTest(t *testing.T) {
	ft := &fakeTB{TB: t}
	srv := feishutest.NewServer(ft)
	cli := newClient(srv)
	resp, err := cli.Delete(context.Background(), "/open-apis/im/v1/messages/om_1", nil, larkcore.AccessTokenTypeTenant)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HTTP %d, want 404", resp.StatusCode)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], "unhandled request DELETE /open-apis/im/v1/messages/om_1") {
		t.Errorf("errors = %q", ft.errors)
	}
}

// fakeTB records Errorf instead of failing.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
