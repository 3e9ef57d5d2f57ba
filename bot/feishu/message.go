package feishu

import (
	"context"
	"encoding/json"
	"fmt"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// MaxUUIDLen is the longest idempotency uuid Feishu accepts on create and reply.
const MaxUUIDLen = 50

// Sent describes a message Feishu accepted.
type Sent struct {
	MessageID string
	RootID    string
	ThreadID  string // set for replies in a thread
	ChatID    string
}

// sentOf reads the message Feishu's answer describes.
func sentOf(messageID, rootID, threadID, chatID *string) Sent {
	return Sent{
		MessageID: larkcore.StringValue(messageID),
		RootID:    larkcore.StringValue(rootID),
		ThreadID:  larkcore.StringValue(threadID),
		ChatID:    larkcore.StringValue(chatID),
	}
}

// sentErr is err, or an error when Feishu accepted a message without naming it.
func sentErr(op string, out Sent, err error) error {
	if err == nil && out.MessageID == "" {
		return &Error{Op: op, Msg: "answer carries no message_id"}
	}
	return err
}

// SendCard posts an interactive card (JSON 2.0, as bytes) to a chat. uuid makes the
// call idempotent: Feishu sends at most one message per uuid within an hour, so a
// retry after a lost answer does not post the card twice. uuid may be "".
//
// Feishu API: POST /open-apis/im/v1/messages?receive_id_type=chat_id
func (c *Client) SendCard(ctx context.Context, chatID string, card []byte, uuid string) (Sent, error) {
	return c.create(ctx, "send card", chatID, "interactive", string(card), uuid)
}

// SendText posts a plain text message to a chat; see SendCard for uuid.
func (c *Client) SendText(ctx context.Context, chatID, text, uuid string) (Sent, error) {
	return c.create(ctx, "send text", chatID, "text", textContent(text), uuid)
}

func (c *Client) create(ctx context.Context, op, chatID, msgType, content, uuid string) (Sent, error) {
	if len(uuid) > MaxUUIDLen {
		return Sent{}, fmt.Errorf("feishu: %s: uuid longer than %d bytes", op, MaxUUIDLen)
	}
	body := larkim.NewCreateMessageReqBodyBuilder().ReceiveId(chatID).MsgType(msgType).Content(content)
	if uuid != "" {
		body.Uuid(uuid)
	}
	req := larkim.NewCreateMessageReqBuilder().ReceiveIdType("chat_id").Body(body.Build()).Build()
	var out Sent
	err := c.call(ctx, op, func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.Message.Create(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if d := resp.Data; resp.Code == 0 && d != nil {
			out = sentOf(d.MessageId, d.RootId, d.ThreadId, d.ChatId)
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
	return out, sentErr(op, out, err)
}

// ReplyText replies to a message with plain text. With inThread the reply goes into the
// message's thread (creating it), and Sent.ThreadID names the thread.
//
// Feishu API: POST /open-apis/im/v1/messages/:message_id/reply
func (c *Client) ReplyText(ctx context.Context, messageID, text string, inThread bool, uuid string) (Sent, error) {
	return c.reply(ctx, "reply text", messageID, "text", textContent(text), inThread, uuid)
}

// ReplyCard replies to a message with an interactive card; see ReplyText.
func (c *Client) ReplyCard(ctx context.Context, messageID string, card []byte, inThread bool, uuid string) (Sent, error) {
	return c.reply(ctx, "reply card", messageID, "interactive", string(card), inThread, uuid)
}

func (c *Client) reply(ctx context.Context, op, messageID, msgType, content string, inThread bool, uuid string) (Sent, error) {
	if len(uuid) > MaxUUIDLen {
		return Sent{}, fmt.Errorf("feishu: %s: uuid longer than %d bytes", op, MaxUUIDLen)
	}
	body := larkim.NewReplyMessageReqBodyBuilder().MsgType(msgType).Content(content).ReplyInThread(inThread)
	if uuid != "" {
		body.Uuid(uuid)
	}
	req := larkim.NewReplyMessageReqBuilder().MessageId(messageID).Body(body.Build()).Build()
	var out Sent
	err := c.call(ctx, op, func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.Message.Reply(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		if d := resp.Data; resp.Code == 0 && d != nil {
			out = sentOf(d.MessageId, d.RootId, d.ThreadId, d.ChatId)
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
	return out, sentErr(op, out, err)
}

// PatchCard replaces the content of a card the bot sent. Feishu refuses cards older
// than 14 days (see Error.PatchWindowEnded) and more than 5 patches a second per card.
//
// Feishu API: PATCH /open-apis/im/v1/messages/:message_id
func (c *Client) PatchCard(ctx context.Context, messageID string, card []byte) error {
	req := larkim.NewPatchMessageReqBuilder().MessageId(messageID).
		Body(larkim.NewPatchMessageReqBodyBuilder().Content(string(card)).Build()).Build()
	return c.call(ctx, "patch card", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.Message.Patch(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
}

// AddReaction adds an emoji reaction (e.g. "DONE") to a message.
//
// Feishu API: POST /open-apis/im/v1/messages/:message_id/reactions
func (c *Client) AddReaction(ctx context.Context, messageID, emoji string) error {
	req := larkim.NewCreateMessageReactionReqBuilder().MessageId(messageID).
		Body(larkim.NewCreateMessageReactionReqBodyBuilder().
			ReactionType(larkim.NewEmojiBuilder().EmojiType(emoji).Build()).Build()).Build()
	return c.call(ctx, "add reaction", func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error) {
		resp, err := c.sdk.Im.V1.MessageReaction.Create(ctx, req, opt)
		if err != nil {
			return nil, 0, "", err
		}
		return resp.ApiResp, resp.Code, resp.Msg, nil
	})
}

// textContent encodes a text message's content: a JSON string inside the JSON body.
func textContent(text string) string {
	b, _ := json.Marshal(struct {
		Text string `json:"text"`
	}{text})
	return string(b)
}
