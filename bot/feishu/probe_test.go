package feishu_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
)

func TestCheckCredentials(t *testing.T) {
	srv := feishutest.NewServer(t)
	c := newClient(t, srv, &syncBuffer{})
	if err := c.CheckCredentials(t.Context()); err != nil {
		t.Fatalf("CheckCredentials: %v", err)
	}
	if err := c.CheckCredentials(t.Context()); err != nil {
		t.Fatalf("CheckCredentials again: %v", err)
	}
	if got := srv.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2 (each check asks Feishu)", got)
	}

	bad, err := feishu.NewClient(feishu.Config{AppID: srv.AppID, AppSecret: "wrong-SECRET-0001", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = bad.CheckCredentials(t.Context())
	var fe *feishu.Error
	if !errors.As(err, &fe) || fe.Code != feishutest.CodeAppSecretInvalid {
		t.Fatalf("CheckCredentials with a wrong secret = %v, want code %d", err, feishutest.CodeAppSecretInvalid)
	}
	if strings.Contains(err.Error(), "wrong-SECRET-0001") {
		t.Errorf("error leaks the secret: %v", err)
	}
}

func TestBotInfo(t *testing.T) {
	srv := feishutest.NewServer(t, feishutest.WithBot("ou_doc", "doc bot"))
	c := newClient(t, srv, &syncBuffer{})
	got, err := c.BotInfo(t.Context())
	if err != nil {
		t.Fatalf("BotInfo: %v", err)
	}
	if want := (feishu.BotInfo{OpenID: "ou_doc", AppName: "doc bot", ActivateStatus: 2}); got != want || !got.Enabled() {
		t.Errorf("BotInfo = %+v, want %+v and enabled", got, want)
	}
	srv.FailNext(1, http.StatusBadRequest, 230006)
	_, err = c.BotInfo(t.Context())
	var fe *feishu.Error
	if !errors.As(err, &fe) || fe.Code != 230006 {
		t.Errorf("BotInfo with the bot ability off = %v, want code 230006", err)
	}
}

func TestCheckLongConnection(t *testing.T) {
	srv := feishutest.NewServer(t)
	ctx := t.Context()
	if err := feishu.CheckLongConnection(ctx, nil, srv.URL, srv.AppID, srv.AppSecret); err != nil {
		t.Fatalf("CheckLongConnection: %v", err)
	}
	if n := srv.Connects(); n != 0 {
		t.Errorf("CheckLongConnection dialled %d connections, want none", n)
	}
	err := feishu.CheckLongConnection(ctx, nil, srv.URL, srv.AppID, "wrong-SECRET-0002")
	var fe *feishu.Error
	if !errors.As(err, &fe) || fe.Code != feishutest.CodeWSAuthFailed {
		t.Errorf("CheckLongConnection with a wrong secret = %v, want code %d", err, feishutest.CodeWSAuthFailed)
	} else if strings.Contains(err.Error(), "wrong-SECRET-0002") {
		t.Errorf("error leaks the secret: %v", err)
	}

	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(html.Close)
	if err := feishu.CheckLongConnection(ctx, nil, html.URL, srv.AppID, srv.AppSecret); err == nil || errors.As(err, &fe) {
		t.Errorf("CheckLongConnection against a web page = %v, want a non-API error", err)
	}
}

func TestNotChatMemberAndMissingScope(t *testing.T) {
	for _, tc := range []struct {
		code          int
		member, scope bool
	}{
		{230002, true, false}, {232011, true, false}, {99991672, false, true}, {230027, false, true}, {230001, false, false},
	} {
		e := &feishu.Error{Code: tc.code}
		if e.NotChatMember() != tc.member || e.MissingScope() != tc.scope {
			t.Errorf("code %d: NotChatMember %v MissingScope %v, want %v %v", tc.code, e.NotChatMember(), e.MissingScope(), tc.member, tc.scope)
		}
	}
}
