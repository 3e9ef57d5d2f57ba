package feishutest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
)

// eventSeq makes event ids unique in the process, so dedupe stores shared by tests never see
// one id twice by accident.
var eventSeq atomic.Int64

// MessageSpec describes an im.message.receive_v1 event. Empty fields get defaults.
type MessageSpec struct {
	EventID   string // default: unique
	MessageID string // default: a new "om_<n>"
	// RootID, ParentID and ThreadID place the message. With RootID set, an empty ParentID
	// becomes RootID, and an empty ThreadID becomes the root's thread if the fake knows one.
	RootID, ParentID, ThreadID string
	ChatID                     string
	ChatType                   string // default "group"
	SenderOpenID               string
	SenderType                 string // default "user"
	MessageType                string // default "text"
	// Content is the raw content JSON string, e.g. TextContent("@_user_1 hi").
	Content    string
	Mentions   []Mention
	CreateTime time.Time // default: s.Now()
}

// Mention is one entry of message.mentions.
type Mention struct {
	Key    string // "@_user_1"
	OpenID string
	Name   string // default: BotName for the bot
	// MentionedType is "user" or "bot"; default "bot" for the bot's open_id, else "user".
	MentionedType string
}

// CardActionSpec describes a card.action.trigger callback (a button click).
type CardActionSpec struct {
	EventID        string // default: unique
	OperatorOpenID string
	Token          string // the delayed-update token; default "c-<n>"
	Value          map[string]any
	MessageID      string
	ChatID         string // default: the chat of MessageID if the fake knows it
}

// TextContent returns the content JSON of a text message.
func TextContent(text string) string {
	b, _ := json.Marshal(map[string]string{"text": text})
	return string(b)
}

// URLVerification returns the url_verification challenge the platform sends when a request
// URL is configured.
func URLVerification(token, challenge string) []byte {
	b, _ := json.Marshal(map[string]string{"challenge": challenge, "token": token, "type": "url_verification"})
	return b
}

type userID struct {
	OpenID  string `json:"open_id,omitempty"`
	UnionID string `json:"union_id,omitempty"`
}

func newUserID(openID string) *userID {
	if openID == "" {
		return nil
	}
	return &userID{OpenID: openID, UnionID: "on_" + strings.TrimPrefix(openID, "ou_")}
}

type eventHeader struct {
	EventID    string `json:"event_id"`
	EventType  string `json:"event_type"`
	CreateTime string `json:"create_time"`
	Token      string `json:"token"`
	AppID      string `json:"app_id"`
	TenantKey  string `json:"tenant_key"`
}

func (s *Server) header(eventID, eventType string, at time.Time) eventHeader {
	if eventID == "" {
		eventID = fmt.Sprintf("ev_%d", eventSeq.Add(1))
	}
	return eventHeader{
		EventID: eventID, EventType: eventType, CreateTime: strconv.FormatInt(at.UnixMilli(), 10),
		Token: s.VerificationToken, AppID: s.AppID, TenantKey: s.TenantKey,
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("feishutest: " + err.Error()) // only static shapes are encoded
	}
	return b
}

// MessageEvent returns an im.message.receive_v1 event (schema 2.0, reference/feishu.md §5) and
// records the message as a user's message, so the bot can reply or react to it and Messages
// lists it.
func (s *Server) MessageEvent(m MessageSpec) []byte {
	if m.ChatType == "" {
		m.ChatType = "group"
	}
	if m.SenderType == "" {
		m.SenderType = "user"
	}
	if m.MessageType == "" {
		m.MessageType = "text"
	}
	if m.CreateTime.IsZero() {
		m.CreateTime = s.Now()
	}
	s.mu.Lock()
	if m.MessageID == "" {
		m.MessageID = fmt.Sprintf("om_%d", s.next("om"))
	}
	if m.RootID != "" {
		if m.ParentID == "" {
			m.ParentID = m.RootID
		}
		if root, ok := s.msgs[m.RootID]; ok && m.ThreadID == "" {
			m.ThreadID = root.ThreadID
		}
	}
	if _, ok := s.msgs[m.MessageID]; !ok {
		s.msgs[m.MessageID] = &Message{
			ID: m.MessageID, ChatID: m.ChatID, RootID: m.RootID, ParentID: m.ParentID, ThreadID: m.ThreadID,
			MsgType: m.MessageType, Content: m.Content, SenderID: m.SenderOpenID, SenderType: m.SenderType,
			Created: m.CreateTime,
		}
		s.order = append(s.order, m.MessageID)
	}
	s.mu.Unlock()

	type mention struct {
		Key           string  `json:"key"`
		ID            *userID `json:"id"`
		Name          string  `json:"name"`
		TenantKey     string  `json:"tenant_key"`
		MentionedType string  `json:"mentioned_type"`
	}
	var mentions []mention
	for _, mn := range m.Mentions {
		if mn.MentionedType == "" {
			mn.MentionedType = "user"
			if mn.OpenID == s.BotOpenID {
				mn.MentionedType = "bot"
			}
		}
		if mn.Name == "" && mn.OpenID == s.BotOpenID {
			mn.Name = s.BotName
		}
		mentions = append(mentions, mention{mn.Key, newUserID(mn.OpenID), mn.Name, s.TenantKey, mn.MentionedType})
	}
	ms := strconv.FormatInt(m.CreateTime.UnixMilli(), 10)
	return mustJSON(map[string]any{
		"schema": "2.0",
		"header": s.header(m.EventID, "im.message.receive_v1", m.CreateTime),
		"event": map[string]any{
			"sender": map[string]any{
				"sender_id":   newUserID(m.SenderOpenID),
				"sender_type": m.SenderType,
				"tenant_key":  s.TenantKey,
			},
			"message": struct {
				MessageID   string    `json:"message_id"`
				RootID      string    `json:"root_id,omitempty"`
				ParentID    string    `json:"parent_id,omitempty"`
				ThreadID    string    `json:"thread_id,omitempty"`
				CreateTime  string    `json:"create_time"`
				UpdateTime  string    `json:"update_time"`
				ChatID      string    `json:"chat_id"`
				ChatType    string    `json:"chat_type"`
				MessageType string    `json:"message_type"`
				Content     string    `json:"content"`
				Mentions    []mention `json:"mentions,omitempty"`
			}{m.MessageID, m.RootID, m.ParentID, m.ThreadID, ms, ms, m.ChatID, m.ChatType, m.MessageType, m.Content, mentions},
		},
	})
}

// ButtonValues returns the callback values of a card's buttons (what a click on one
// delivers as CardActionSpec.Value), by their "action" field.
func ButtonValues(content string) (map[string]map[string]any, error) {
	var card any
	if err := json.Unmarshal([]byte(content), &card); err != nil {
		return nil, fmt.Errorf("card is not JSON: %w", err)
	}
	out := map[string]map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if val, ok := x["value"].(map[string]any); ok {
				if a, ok := val["action"].(string); ok {
					out[a] = val
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(card)
	return out, nil
}

// CardActionEvent returns a card.action.trigger callback (reference/feishu.md §3.3).
func (s *Server) CardActionEvent(c CardActionSpec) []byte {
	if c.Token == "" {
		c.Token = fmt.Sprintf("c-%d", eventSeq.Add(1))
	}
	if c.Value == nil {
		c.Value = map[string]any{}
	}
	if c.ChatID == "" {
		if m, ok := s.Message(c.MessageID); ok {
			c.ChatID = m.ChatID
		}
	}
	now := s.Now()
	op := map[string]any{"tenant_key": s.TenantKey, "open_id": c.OperatorOpenID}
	if u := newUserID(c.OperatorOpenID); u != nil {
		op["union_id"] = u.UnionID
	}
	return mustJSON(map[string]any{
		"schema": "2.0",
		"header": s.header(c.EventID, "card.action.trigger", now),
		"event": map[string]any{
			"operator": op,
			"token":    c.Token,
			"action": map[string]any{
				"tag": "button", "value": c.Value, "name": "", "form_value": map[string]any{},
				"input_value": "", "option": "", "options": []string{}, "checked": false, "timezone": "",
			},
			"host":          "im_message",
			"delivery_type": "",
			"context":       map[string]any{"open_message_id": c.MessageID, "open_chat_id": c.ChatID, "url": "", "preview_token": ""},
		},
	})
}

// BotAddedEvent returns an im.chat.member.bot.added_v1 event and puts the bot into chatID.
func (s *Server) BotAddedEvent(chatID, operatorOpenID string) []byte {
	s.AddChat(chatID)
	return s.chatEvent("im.chat.member.bot.added_v1", chatID, operatorOpenID)
}

// BotRemovedEvent returns an im.chat.member.bot.deleted_v1 event and takes the bot out of
// chatID.
func (s *Server) BotRemovedEvent(chatID, operatorOpenID string) []byte {
	s.RemoveChat(chatID)
	return s.chatEvent("im.chat.member.bot.deleted_v1", chatID, operatorOpenID)
}

// ChatDisbandedEvent returns an im.chat.disbanded_v1 event and takes the bot out of chatID.
func (s *Server) ChatDisbandedEvent(chatID, operatorOpenID string) []byte {
	s.RemoveChat(chatID)
	return s.chatEvent("im.chat.disbanded_v1", chatID, operatorOpenID)
}

// chatEvent builds the events about a group; they share one shape.
func (s *Server) chatEvent(eventType, chatID, operatorOpenID string) []byte {
	return mustJSON(map[string]any{
		"schema": "2.0",
		"header": s.header("", eventType, s.Now()),
		"event": map[string]any{
			"chat_id":             chatID,
			"operator_id":         newUserID(operatorOpenID),
			"external":            false,
			"operator_tenant_key": s.TenantKey,
			"name":                "test chat " + chatID,
		},
	})
}

// HTTPOptions control how DeliverHTTP encrypts and signs an event.
type HTTPOptions struct {
	// EncryptKey encrypts the body to {"encrypt":"…"} and signs it, as the platform does
	// when an Encrypt Key is configured.
	EncryptKey string
	// Timestamp goes into X-Lark-Request-Timestamp; zero means s.Now().
	Timestamp time.Time
	// Nonce goes into X-Lark-Request-Nonce; empty means a random one.
	Nonce string
	// Plain sends the payload unencrypted (still signed if EncryptKey is set).
	Plain bool
	// BadSignature sends a signature made with the wrong key.
	BadSignature bool
	// NoSignature leaves X-Lark-Signature out.
	NoSignature bool
}

// DeliverHTTP posts payload to url the way the platform posts events to a request URL:
// encrypted with larkcore.EncryptedEventMsg and signed with
// sha256(timestamp + nonce + encrypt_key + body) when o.EncryptKey is set.
func (s *Server) DeliverHTTP(ctx context.Context, url string, payload []byte, o HTTPOptions) (status int, body []byte, err error) {
	reqBody := payload
	if o.EncryptKey != "" && !o.Plain {
		enc, err := larkcore.EncryptedEventMsg(ctx, payload, o.EncryptKey)
		if err != nil {
			return 0, nil, fmt.Errorf("feishutest: encrypt event: %w", err)
		}
		reqBody = mustJSON(map[string]string{"encrypt": enc})
	}
	ts := o.Timestamp
	if ts.IsZero() {
		ts = s.Now()
	}
	tsStr := strconv.FormatInt(ts.Unix(), 10)
	nonce := o.Nonce
	if nonce == "" {
		b := make([]byte, 8)
		rand.Read(b)
		nonce = hex.EncodeToString(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(reqBody))
	if err != nil {
		return 0, nil, fmt.Errorf("feishutest: deliver event: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set(larkevent.EventRequestTimestamp, tsStr)
	req.Header.Set(larkevent.EventRequestNonce, nonce)
	switch {
	case o.NoSignature:
	case o.BadSignature:
		req.Header.Set(larkevent.EventSignature, larkevent.Signature(tsStr, nonce, o.EncryptKey+"-forged", string(reqBody)))
	case o.EncryptKey != "":
		req.Header.Set(larkevent.EventSignature, larkevent.Signature(tsStr, nonce, o.EncryptKey, string(reqBody)))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return 0, nil, fmt.Errorf("feishutest: deliver event: %w", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("feishutest: read event answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		s.applyCallbackAnswer(payload, body)
	}
	return resp.StatusCode, body, nil
}
