package feishu

import (
	"context"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// Chat is what the bot needs to know about a group.
type Chat struct {
	Name string
	// OwnerOnly is set when only the owner and the managers may edit the group's
	// settings (edit_permission "only_owner").
	OwnerOnly bool
	// OwnerOpenID and ManagerOpenIDs name the people allowed to edit then.
	OwnerOpenID    string
	ManagerOpenIDs []string
}

// CanEdit reports whether a member may change what the group is set up to receive:
// anyone, unless the group lets only its owner and managers edit its settings.
func (c Chat) CanEdit(openID string) bool {
	if !c.OwnerOnly {
		return true
	}
	if openID != "" && openID == c.OwnerOpenID {
		return true
	}
	for _, m := range c.ManagerOpenIDs {
		if m == openID && openID != "" {
			return true
		}
	}
	return false
}

// ChatInfo returns a group's name and who may edit its settings. The bot must be in
// the group.
//
// Feishu API: GET /open-apis/im/v1/chats/:chat_id?user_id_type=open_id
func (c *Client) ChatInfo(ctx context.Context, chatID string) (Chat, error) {
	req := larkim.NewGetChatReqBuilder().ChatId(chatID).UserIdType("open_id").Build()
	var out Chat
	err := c.call(ctx, "get chat", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.Chat.Get(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if resp.Code == 0 && resp.Data != nil {
			d := resp.Data
			out = Chat{
				Name:           larkcore.StringValue(d.Name),
				OwnerOnly:      larkcore.StringValue(d.EditPermission) == "only_owner",
				OwnerOpenID:    larkcore.StringValue(d.OwnerId),
				ManagerOpenIDs: d.UserManagerIdList,
			}
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
	return out, err
}

// BotInChat reports whether the bot is a member of a group.
//
// Feishu API: GET /open-apis/im/v1/chats/:chat_id/members/is_in_chat
func (c *Client) BotInChat(ctx context.Context, chatID string) (bool, error) {
	req := larkim.NewIsInChatChatMembersReqBuilder().ChatId(chatID).Build()
	var in bool
	err := c.call(ctx, "check chat membership", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.ChatMembers.IsInChat(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if resp.Code == 0 && resp.Data != nil {
			in = larkcore.BoolValue(resp.Data.IsInChat)
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
	return in, err
}
