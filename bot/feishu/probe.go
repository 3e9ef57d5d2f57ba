package feishu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkws "github.com/larksuite/oapi-sdk-go/v3/ws"
)

// These calls let an operator's check (issuebot doctor) ask Feishu about the setup
// without sending anything anyone sees.

// CheckCredentials fetches a fresh tenant access token, which proves the app id and
// secret. A refusal is an *Error with Feishu's code (10003, 10014, …).
//
// Feishu API: POST /open-apis/auth/v3/tenant_access_token/internal
func (c *Client) CheckCredentials(ctx context.Context) error {
	c.tokMu.Lock()
	c.token = "" // ask Feishu, not the cache
	c.tokMu.Unlock()
	_, err := c.tenantToken(ctx)
	return err
}

// NotChatMember reports whether the bot is not a member of the chat the call was about:
// the message APIs say so with 230002, the chat APIs with 232011.
func (e *Error) NotChatMember() bool {
	return e.Code == codeNotInChat || e.Code == codeOperatorNotInChat
}

// MissingScope reports whether the app lacks a permission scope the call needs.
func (e *Error) MissingScope() bool { return e.Code == codeNoScope || e.Code == codeNoPermission }

// Codes of the long-connection endpoint (the SDK's ws package) worth telling apart.
const (
	// WSSystemBusy and WSInternalError are temporary; the SDK retries them.
	WSSystemBusy    = larkws.SystemBusy
	WSInternalError = larkws.InternalError
	// WSExceedConnLimit means the app already holds as many long connections as
	// Feishu allows.
	WSExceedConnLimit = larkws.ExceedConnLimit
)

// CheckLongConnection asks Feishu for a long-connection endpoint with the app's
// credentials, as larkws.Client does before it dials, without dialling: it proves that
// baseURL serves the long connection and accepts the app. A refusal is an *Error with
// the endpoint's code; hc nil means a client with a 10 s timeout.
//
// Feishu API: POST /callback/ws/endpoint
func CheckLongConnection(ctx context.Context, hc *http.Client, baseURL, appID, appSecret string) error {
	const op = "get long connection endpoint"
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	body, err := json.Marshal(larkws.BootstrapRequest{AppID: appID, AppSecret: appSecret})
	if err != nil {
		return fmt.Errorf("feishu: %s: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		strings.TrimRight(baseURL, "/")+larkws.GenEndpointUri, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("feishu: %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("locale", "zh") // as the SDK sends it
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("feishu: %s: %w", op, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
	}()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("feishu: %s: read answer: %w", op, err)
	}
	var ep larkws.EndpointResp
	decodeErr := json.Unmarshal(raw, &ep)
	logID := resp.Header.Get(larkcore.HttpHeaderKeyLogId)
	switch {
	case resp.StatusCode != http.StatusOK:
		if decodeErr != nil {
			return fmt.Errorf("feishu: %s: %w", op, &statusError{status: resp.StatusCode})
		}
		return &Error{Op: op, HTTPStatus: resp.StatusCode, Code: ep.Code, Msg: ep.Msg, LogID: logID}
	case decodeErr != nil:
		return fmt.Errorf("feishu: %s: answer is not JSON: %w", op, decodeErr)
	case ep.Code != 0:
		return &Error{Op: op, HTTPStatus: resp.StatusCode, Code: ep.Code, Msg: ep.Msg, LogID: logID}
	case ep.Data == nil || ep.Data.Url == "":
		// The URL carries a ticket: it is checked, never returned.
		return &Error{Op: op, HTTPStatus: resp.StatusCode, Msg: "answer carries no endpoint", LogID: logID}
	}
	return nil
}
