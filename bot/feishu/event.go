package feishu

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher/callback"
	larkim "github.com/larksuite/oapi-sdk-go/v3/service/im/v1"
)

// Handler receives decoded events. Both intake modes call the same Handler.
// Implementations must return well inside Feishu's 3 s deadline: slow work belongs
// after the acknowledgement. An error makes Feishu deliver the event again, so return
// one only for failures a redelivery can cure.
type Handler interface {
	HandleMessage(ctx context.Context, m Message) error
	HandleCardAction(ctx context.Context, a CardAction) (CardResponse, error)
	HandleBotAdded(ctx context.Context, e ChatEvent) error
	HandleBotRemoved(ctx context.Context, e ChatEvent) error
}

// Message is an im.message.receive_v1 event.
type Message struct {
	EventID     string
	MessageID   string
	RootID      string // the thread root (the card) for replies and thread messages
	ParentID    string
	ThreadID    string // omt_… for thread messages
	ChatID      string
	ChatType    string // "group" or "p2p"
	MessageType string // text, post, image, file, interactive, …
	// Content is the message content JSON exactly as Feishu sent it.
	Content      string
	SenderOpenID string
	SenderType   string // "user" for a person; "app", "bot" or another value for anything else
	Mentions     []Mention
	// CreateTime is when the message was sent; EventTime when Feishu emitted the event.
	CreateTime time.Time
	EventTime  time.Time
}

// Mention is one @mention of a Message; Key is the placeholder in Content ("@_user_1").
type Mention struct {
	Key    string
	OpenID string
	Name   string
}

// CardAction is a card.action.trigger callback (a button click).
type CardAction struct {
	EventID        string
	OperatorOpenID string
	// Token allows a delayed card update within 30 minutes.
	Token     string
	Tag       string
	Value     map[string]any
	MessageID string
	ChatID    string
	EventTime time.Time
}

// CardResponse answers a CardAction: an optional toast and an optional new card
// (JSON 2.0) that replaces the clicked card for everyone.
type CardResponse struct {
	Toast *Toast
	Card  json.RawMessage
}

// Toast is a short message shown to the user who clicked, in both languages.
type Toast struct {
	Type string // info, success, warning or error
	ZhCN string
	EnUS string
}

// ChatEvent is a bot added to / removed from chat event, or a group disbanded.
type ChatEvent struct {
	EventID        string
	ChatID         string
	ChatName       string
	OperatorOpenID string
	EventTime      time.Time
	// Disbanded is set when the whole group was disbanded (im.chat.disbanded_v1).
	Disbanded bool
}

// decodeMessage decodes an im.message.receive_v1 body. ok is false when the body is
// malformed or lacks the fields every message has.
func decodeMessage(body []byte) (Message, bool) {
	var e larkim.P2MessageReceiveV1
	if err := json.Unmarshal(body, &e); err != nil || e.Event == nil || e.Event.Message == nil {
		return Message{}, false
	}
	msg := e.Event.Message
	m := Message{
		MessageID:   larkcore.StringValue(msg.MessageId),
		RootID:      larkcore.StringValue(msg.RootId),
		ParentID:    larkcore.StringValue(msg.ParentId),
		ThreadID:    larkcore.StringValue(msg.ThreadId),
		ChatID:      larkcore.StringValue(msg.ChatId),
		ChatType:    larkcore.StringValue(msg.ChatType),
		MessageType: larkcore.StringValue(msg.MessageType),
		Content:     larkcore.StringValue(msg.Content),
		CreateTime:  msTime(larkcore.StringValue(msg.CreateTime)),
	}
	if e.EventV2Base != nil && e.EventV2Base.Header != nil {
		m.EventID = e.EventV2Base.Header.EventID
		m.EventTime = msTime(e.EventV2Base.Header.CreateTime)
	}
	if s := e.Event.Sender; s != nil {
		m.SenderType = larkcore.StringValue(s.SenderType)
		if s.SenderId != nil {
			m.SenderOpenID = larkcore.StringValue(s.SenderId.OpenId)
		}
	}
	for _, mn := range msg.Mentions {
		if mn == nil {
			continue
		}
		x := Mention{Key: larkcore.StringValue(mn.Key), Name: larkcore.StringValue(mn.Name)}
		if mn.Id != nil {
			x.OpenID = larkcore.StringValue(mn.Id.OpenId)
		}
		m.Mentions = append(m.Mentions, x)
	}
	if m.MessageID == "" || m.ChatID == "" {
		return Message{}, false
	}
	return m, true
}

// decodeChatEvent decodes im.chat.member.bot.added_v1 / deleted_v1 and im.chat.disbanded_v1
// bodies (the same shape).
func decodeChatEvent(body []byte) (ChatEvent, bool) {
	var e larkim.P2ChatMemberBotAddedV1
	if err := json.Unmarshal(body, &e); err != nil || e.Event == nil {
		return ChatEvent{}, false
	}
	c := ChatEvent{ChatID: larkcore.StringValue(e.Event.ChatId), ChatName: larkcore.StringValue(e.Event.Name)}
	if e.Event.OperatorId != nil {
		c.OperatorOpenID = larkcore.StringValue(e.Event.OperatorId.OpenId)
	}
	if e.EventV2Base != nil && e.EventV2Base.Header != nil {
		c.EventID = e.EventV2Base.Header.EventID
		c.EventTime = msTime(e.EventV2Base.Header.CreateTime)
	}
	if c.ChatID == "" {
		return ChatEvent{}, false
	}
	return c, true
}

// cardAction converts the SDK's callback; ok is false when it lacks the action.
func cardAction(e *callback.CardActionTriggerEvent) (CardAction, bool) {
	if e == nil || e.Event == nil || e.Event.Action == nil {
		return CardAction{}, false
	}
	a := CardAction{
		Token: e.Event.Token,
		Tag:   e.Event.Action.Tag,
		Value: e.Event.Action.Value,
	}
	if e.Event.Operator != nil {
		a.OperatorOpenID = e.Event.Operator.OpenID
	}
	if e.Event.Context != nil {
		a.MessageID = e.Event.Context.OpenMessageID
		a.ChatID = e.Event.Context.OpenChatID
	}
	if e.EventV2Base != nil && e.EventV2Base.Header != nil {
		a.EventID = e.EventV2Base.Header.EventID
		a.EventTime = msTime(e.EventV2Base.Header.CreateTime)
	}
	return a, true
}

// callbackResponse converts a CardResponse for the SDK. It never returns nil: a typed
// nil would be answered as the JSON "null", which Feishu rejects.
func callbackResponse(r CardResponse) *callback.CardActionTriggerResponse {
	out := &callback.CardActionTriggerResponse{}
	if r.Toast != nil {
		out.Toast = &callback.Toast{
			Type:        r.Toast.Type,
			Content:     r.Toast.EnUS,
			I18nContent: map[string]string{"zh_cn": r.Toast.ZhCN, "en_us": r.Toast.EnUS},
		}
	}
	if len(r.Card) > 0 {
		out.Card = &callback.Card{Type: "raw", Data: r.Card}
	}
	return out
}

// msTime parses Feishu's millisecond timestamps ("1700000000000").
func msTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	// Feishu's docs say milliseconds, but card.action.trigger headers carry 16-digit
	// microseconds: judge the unit by the size (seconds until 2286, ms and µs alike).
	switch {
	case n >= 1e15:
		return time.UnixMicro(n)
	case n >= 1e11:
		return time.UnixMilli(n)
	}
	return time.Unix(n, 0)
}
