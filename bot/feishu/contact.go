package feishu

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

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
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", &Error{Op: "get user", Msg: "answer carries no name"}
	}
	c.namesMu.Lock()
	c.names[openID] = cachedName{name: name, expires: c.now().Add(c.nameTTL)}
	c.namesMu.Unlock()
	return name, nil
}

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
	var info struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
		Bot  struct {
			OpenID string `json:"open_id"`
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
		return "", err
	}
	if info.Bot.OpenID == "" {
		return "", &Error{Op: "get bot info", Msg: "answer carries no open_id"}
	}
	c.botOpenID = info.Bot.OpenID
	return c.botOpenID, nil
}
