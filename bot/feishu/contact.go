package feishu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkcontact "github.com/larksuite/oapi-sdk-go/v3/service/contact/v3"
)

// UserName returns a user's display name, cached for Config.NameTTL. Feishu events
// carry only ids, so thread replies need this to say who wrote them.
//
// Feishu API: GET /open-apis/contact/v3/users/:user_id?user_id_type=open_id
func (c *Client) UserName(ctx context.Context, openID string) (string, error) {
	c.namesMu.Lock()
	if n, ok := c.names[openID]; ok && c.now().Before(n.expires) {
		c.namesMu.Unlock()
		if n.err != nil {
			return "", n.err
		}
		return n.name, nil
	}
	c.namesMu.Unlock()

	req := larkcontact.NewGetUserReqBuilder().UserId(openID).UserIdType("open_id").Build()
	var name string
	err := c.call(ctx, "get user", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Contact.V3.User.Get(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if resp.Code == 0 && resp.Data != nil && resp.Data.User != nil {
			name = larkcore.StringValue(resp.Data.User.Name)
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
	if err == nil && name == "" {
		err = &Error{Op: "get user", Msg: "answer carries no name"}
	}
	entry := cachedName{name: name, expires: c.now().Add(c.nameTTL)}
	if err != nil {
		var fe *Error
		if !errors.As(err, &fe) || fe.Temporary() {
			return "", err // transport trouble or throttling: ask again next time
		}
		// A refusal (no contact permission, user out of the app's range) will not change
		// soon: remember it briefly so each message does not ask again.
		entry = cachedName{err: err, expires: c.now().Add(failedNameTTL)}
	}
	c.namesMu.Lock()
	if len(c.names) >= maxCachedNames {
		now := c.now()
		for k, v := range c.names {
			if !now.Before(v.expires) {
				delete(c.names, k)
			}
		}
		if len(c.names) >= maxCachedNames {
			clear(c.names)
		}
	}
	c.names[openID] = entry
	c.namesMu.Unlock()
	return name, err
}

// Bounds of the user-name cache.
const (
	maxCachedNames = 10000
	failedNameTTL  = 5 * time.Minute
)

// BotOpenID returns the bot's own open_id (cached after the first success), used to
// recognise mentions of the bot and to ignore the bot's own messages.
//
// Feishu API: GET /open-apis/bot/v3/info
func (c *Client) BotOpenID(ctx context.Context) (string, error) {
	c.botMu.Lock()
	defer c.botMu.Unlock()
	if c.botOpenID != "" {
		return c.botOpenID, nil
	}
	info, err := c.BotInfo(ctx)
	if err != nil {
		return "", err
	}
	c.botOpenID = info.OpenID
	return c.botOpenID, nil
}

// BotInfo is what Feishu says about the app's bot.
type BotInfo struct {
	OpenID  string
	AppName string
	// ActivateStatus is the app's state in the tenant: 2 is enabled; 0 awaits install,
	// 1 is disabled, 3 and 4 await enabling, 5 and 6 are stopped by licence. -1 means
	// the answer did not say.
	ActivateStatus int
}

// Enabled reports whether the app is enabled in the tenant, as far as the answer says.
func (b BotInfo) Enabled() bool { return b.ActivateStatus == -1 || b.ActivateStatus == 2 }

// BotInfo returns the bot's identity and the app's state. It fails when the app has no
// bot ability (or the version that adds it is not published).
//
// Feishu API: GET /open-apis/bot/v3/info
func (c *Client) BotInfo(ctx context.Context) (BotInfo, error) {
	var info struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
		Bot  struct {
			OpenID         string `json:"open_id"`
			AppName        string `json:"app_name"`
			ActivateStatus *int   `json:"activate_status"`
		} `json:"bot"`
	}
	err := c.call(ctx, "get bot info", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Do(ctx, &larkcore.ApiReq{
			HttpMethod:                http.MethodGet,
			ApiPath:                   "/open-apis/bot/v3/info",
			SupportedAccessTokenTypes: []larkcore.AccessTokenType{larkcore.AccessTokenTypeTenant},
		}, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if err := json.Unmarshal(resp.RawBody, &info); err != nil {
			return nil, 0, "", fmt.Errorf("decode bot info: %w", err)
		}
		return resp, info.Code, info.Msg, nil
	})
	if err != nil {
		return BotInfo{}, err
	}
	if info.Bot.OpenID == "" {
		return BotInfo{}, &Error{Op: "get bot info", Msg: "answer carries no open_id"}
	}
	out := BotInfo{OpenID: info.Bot.OpenID, AppName: info.Bot.AppName, ActivateStatus: -1}
	if info.Bot.ActivateStatus != nil {
		out.ActivateStatus = *info.Bot.ActivateStatus
	}
	return out, nil
}
