package feishutest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Message is a message as the fake keeps it: sent by the bot through the API, or by a user
// through an event built with MessageEvent.
type Message struct {
	ID, ChatID, RootID, ParentID, ThreadID string
	MsgType                                string
	// Content is the current content JSON; Patches holds every patched content in order.
	Content string
	UUID    string
	// SenderID is the app id for bot messages, the user's open_id otherwise.
	SenderID   string
	SenderType string // "app" or "user"
	Created    time.Time
	Patches    []string
	// Answered holds every card that replaced this one through a card callback's answer,
	// in order (the platform shows it to everyone, as a patch would).
	Answered []string
	// Recalled is set by Recall: replies, patches and reactions to it fail as the
	// platform's do for a recalled message.
	Recalled bool
	// Reactions holds the emoji type of every reaction added, duplicates included, so a test
	// can see a bot reacting twice.
	Reactions []string
}

func (m *Message) clone() Message {
	c := *m
	c.Patches = append([]string(nil), m.Patches...)
	c.Answered = append([]string(nil), m.Answered...)
	c.Reactions = append([]string(nil), m.Reactions...)
	return c
}

// AddChat puts the bot into chatID; sending to a chat the bot is not in fails with 230002.
func (s *Server) AddChat(chatID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chats[chatID] = true
}

// RemoveChat takes the bot out of chatID.
func (s *Server) RemoveChat(chatID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chats, chatID)
}

// Recall withdraws a message, as its sender can in the client.
func (s *Server) Recall(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	if !ok {
		s.t.Errorf("feishutest: Recall: no message %s", id)
		return
	}
	m.Recalled = true
}

// Messages returns the messages of chatID in the order they were created.
func (s *Server) Messages(chatID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, id := range s.order {
		if m := s.msgs[id]; m.ChatID == chatID {
			out = append(out, m.clone())
		}
	}
	return out
}

// Message returns the message with the id given.
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	if !ok {
		return Message{}, false
	}
	return m.clone(), true
}

// Feishu API: POST /open-apis/im/v1/messages?receive_id_type=chat_id
func (s *Server) createMessage(w *recorder, r *http.Request) {
	switch typ := r.URL.Query().Get("receive_id_type"); typ {
	case "chat_id":
	case "":
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: receive_id_type is required")
		return
	default:
		s.t.Errorf("feishutest: receive_id_type %q is not supported by the fake", typ)
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "feishutest: unsupported receive_id_type "+typ)
		return
	}
	var req struct {
		ReceiveID string `json:"receive_id"`
		MsgType   string `json:"msg_type"`
		Content   string `json:"content"`
		UUID      string `json:"uuid"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	if req.ReceiveID == "" || req.MsgType == "" || req.Content == "" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: receive_id, msg_type and content are required")
		return
	}
	if code, msg := checkContent(req.MsgType, req.Content); code != 0 {
		s.fail(w, http.StatusBadRequest, code, msg)
		return
	}
	s.send(w, req.ReceiveID, req.MsgType, req.Content, req.UUID, nil)
}

// Feishu API: POST /open-apis/im/v1/messages/:message_id/reply
func (s *Server) replyMessage(w *recorder, r *http.Request) {
	var req struct {
		Content       string `json:"content"`
		MsgType       string `json:"msg_type"`
		ReplyInThread bool   `json:"reply_in_thread"`
		UUID          string `json:"uuid"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	if req.MsgType == "" || req.Content == "" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: msg_type and content are required")
		return
	}
	if code, msg := checkContent(req.MsgType, req.Content); code != 0 {
		s.fail(w, http.StatusBadRequest, code, msg)
		return
	}
	s.mu.Lock()
	target, ok := s.msgs[r.PathValue("message_id")]
	var chatID string
	if ok {
		chatID = target.ChatID
	}
	recalled := ok && target.Recalled
	s.mu.Unlock()
	if !ok || recalled {
		s.fail(w, http.StatusBadRequest, CodeMessageNotFound, "The message is not found or has been recalled")
		return
	}
	s.send(w, chatID, req.MsgType, req.Content, req.UUID, &replyTo{id: target.ID, inThread: req.ReplyInThread})
}

type replyTo struct {
	id       string
	inThread bool
}

// send is the common path of create and reply after request validation: membership, the
// per-chat rate limit, uuid idempotency, injected failures, then the commit.
func (s *Server) send(w *recorder, chatID, msgType, content, uuid string, reply *replyTo) {
	s.mu.Lock()
	if !s.chats[chatID] {
		s.mu.Unlock()
		s.fail(w, http.StatusBadRequest, CodeBotNotInChat, "Bot is not in the chat")
		return
	}
	if !s.allow("chat "+chatID, s.ChatQPS) {
		s.throttled++
		s.mu.Unlock()
		s.fail(w, http.StatusBadRequest, CodeChatRateLimited, "This operation triggers the frequency limit")
		return
	}
	now := s.Now()
	// The platform promises at most one message per uuid within an hour; what a repeated request
	// gets back is unverified. The fake answers success with the message first sent, so a client
	// retrying after a lost response converges on one message.
	if uuid != "" {
		if u, ok := s.uuids[uuid]; ok && now.Sub(u.at) < UUIDWindow {
			m := s.msgs[u.messageID].clone()
			s.mu.Unlock()
			s.ok(w, s.messageData(m))
			return
		}
	}
	if s.rng != nil && s.rng.Float64() < s.failRate {
		s.mu.Unlock()
		s.fail(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return
	}

	m := &Message{
		ID: fmt.Sprintf("om_%d", s.next("om")), ChatID: chatID, MsgType: msgType, Content: content, UUID: uuid,
		SenderID: s.AppID, SenderType: "app", Created: now,
	}
	if reply != nil {
		s.placeReply(m, s.msgs[reply.id], reply.inThread)
	}
	s.msgs[m.ID] = m
	s.order = append(s.order, m.ID)
	if uuid != "" {
		s.uuids[uuid] = uuidUse{messageID: m.ID, at: now}
	}
	lose, drop := s.lose > 0, s.lose == 0 && s.drop > 0
	if lose {
		s.lose--
	} else if drop {
		s.drop--
	}
	data := s.messageData(m.clone())
	sent := m.clone()
	s.mu.Unlock()
	if s.AfterSend != nil {
		s.AfterSend(sent)
	}

	switch {
	case lose:
		s.fail(w, http.StatusInternalServerError, CodeInternal, "internal error")
	case drop:
		s.hangUp(w)
	default:
		s.ok(w, data)
	}
}

// placeReply sets the root, parent and thread of reply m to target. Inside a thread every
// message replies to the root: root_id = parent_id = the root message. A reply to a message that
// is already in a thread goes into that thread even without reply_in_thread, as documented.
// Callers hold s.mu.
func (s *Server) placeReply(m, target *Message, inThread bool) {
	root := target
	if target.RootID != "" {
		if r, ok := s.msgs[target.RootID]; ok {
			root = r
		}
	}
	if inThread || target.ThreadID != "" {
		tid, ok := s.threads[root.ID]
		if !ok {
			tid = root.ThreadID
		}
		if tid == "" {
			tid = fmt.Sprintf("omt_%d", s.next("omt"))
		}
		s.threads[root.ID] = tid
		root.ThreadID = tid
		m.RootID, m.ParentID, m.ThreadID = root.ID, root.ID, tid
		return
	}
	m.RootID, m.ParentID = root.ID, target.ID
}

// hangUp closes the connection without answering.
func (s *Server) hangUp(w *recorder) {
	conn, _, err := w.Hijack()
	if err != nil {
		s.t.Errorf("feishutest: hijack: %v", err)
		return
	}
	conn.Close()
}

func (s *Server) messageData(m Message) map[string]any {
	ms := strconv.FormatInt(m.Created.UnixMilli(), 10)
	d := map[string]any{
		"message_id":  m.ID,
		"msg_type":    m.MsgType,
		"create_time": ms,
		"update_time": ms,
		"deleted":     m.Recalled,
		"updated":     len(m.Patches) > 0,
		"chat_id":     m.ChatID,
		"sender":      map[string]any{"id": m.SenderID, "id_type": "app_id", "sender_type": m.SenderType, "tenant_key": s.TenantKey},
		"body":        map[string]any{"content": m.Content},
	}
	if m.RootID != "" {
		d["root_id"] = m.RootID
	}
	if m.ParentID != "" {
		d["parent_id"] = m.ParentID
	}
	if m.ThreadID != "" {
		d["thread_id"] = m.ThreadID
	}
	return d
}

// checkContent applies the platform's content rules: content is JSON, a text message has a
// "text" string, a card or post is a JSON object; cards and posts are at most 30 KB and texts
// at most 150 KB.
func checkContent(msgType, content string) (code int, msg string) {
	limit := 0
	switch msgType {
	case "text":
		limit = MaxTextBytes
		var v struct {
			Text *string `json:"text"`
		}
		if json.Unmarshal([]byte(content), &v) != nil || v.Text == nil {
			return CodeInvalidParam, "invalid message content: text content must be {\"text\":\"...\"}"
		}
	case "interactive", "post":
		limit = MaxCardBytes
		var v map[string]any
		if json.Unmarshal([]byte(content), &v) != nil {
			return CodeInvalidParam, "invalid message content: not a JSON object"
		}
	case "image", "file", "audio", "media", "sticker", "share_chat", "share_user", "system":
		if !json.Valid([]byte(content)) {
			return CodeInvalidParam, "invalid message content: not JSON"
		}
	default:
		return CodeInvalidParam, "invalid msg_type " + msgType
	}
	if limit > 0 && len(content) > limit {
		return CodeContentTooLong, fmt.Sprintf("content length exceeds limit: %d > %d bytes", len(content), limit)
	}
	return 0, ""
}

// Feishu API: PATCH /open-apis/im/v1/messages/:message_id
func (s *Server) patchMessage(w *recorder, r *http.Request) {
	var req struct {
		Content string `json:"content"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	if req.Content == "" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: content is required")
		return
	}
	id := r.PathValue("message_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	switch {
	case !ok || m.Recalled:
		s.fail(w, http.StatusBadRequest, CodeMessageNotFound, "The message is not found or has been recalled")
	case m.MsgType != "interactive":
		s.fail(w, http.StatusBadRequest, CodeInvalidParam, "This message is NOT a card")
	case m.SenderType != "app":
		s.fail(w, http.StatusBadRequest, CodeNotSender, "The bot is not the sender of the message")
	case s.Now().Sub(m.Created) > PatchWindow:
		s.fail(w, http.StatusBadRequest, CodePatchWindowExpired, "The message can only be modified within 14 days")
	default:
		if code, msg := checkContent("interactive", req.Content); code != 0 {
			s.fail(w, http.StatusBadRequest, code, msg)
			return
		}
		if !s.allow("patch "+id, s.PatchQPS) {
			s.throttled++
			s.fail(w, http.StatusBadRequest, CodeChatRateLimited, "This operation triggers the frequency limit")
			return
		}
		m.Content = req.Content
		m.Patches = append(m.Patches, req.Content)
		s.ok(w, map[string]any{})
	}
}

// Feishu API: POST /open-apis/im/v1/messages/:message_id/reactions
func (s *Server) createReaction(w *recorder, r *http.Request) {
	var req struct {
		ReactionType struct {
			EmojiType string `json:"emoji_type"`
		} `json:"reaction_type"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	emoji := req.ReactionType.EmojiType
	if emoji == "" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: reaction_type.emoji_type is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[r.PathValue("message_id")]
	if !ok || m.Recalled {
		s.fail(w, http.StatusBadRequest, CodeMessageNotFound, "The message is not found or has been recalled")
		return
	}
	m.Reactions = append(m.Reactions, emoji)
	s.ok(w, map[string]any{
		"reaction_id":   fmt.Sprintf("rc_%d", s.next("rc")),
		"operator":      map[string]any{"operator_id": s.AppID, "operator_type": "app"},
		"action_time":   strconv.FormatInt(s.Now().UnixMilli(), 10),
		"reaction_type": map[string]any{"emoji_type": emoji},
	})
}

// applyCallbackAnswer does what the platform does with a card callback's answer: a
// "card" of type "raw" replaces the clicked card's content for everyone. payload is the
// callback event that was delivered, answer the handler's response body.
func (s *Server) applyCallbackAnswer(payload, answer []byte) {
	var ev struct {
		Header struct {
			EventType string `json:"event_type"`
		} `json:"header"`
		Event struct {
			Context struct {
				OpenMessageID string `json:"open_message_id"`
			} `json:"context"`
		} `json:"event"`
	}
	if json.Unmarshal(payload, &ev) != nil || ev.Header.EventType != "card.action.trigger" {
		return
	}
	var resp struct {
		Card *struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"card"`
	}
	if json.Unmarshal(answer, &resp) != nil || resp.Card == nil || resp.Card.Type != "raw" || len(resp.Card.Data) == 0 {
		return
	}
	if code, msg := checkContent("interactive", string(resp.Card.Data)); code != 0 {
		s.t.Errorf("feishutest: card callback answered with a card the platform refuses: %d %s", code, msg)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[ev.Event.Context.OpenMessageID]
	if !ok {
		return
	}
	m.Content = string(resp.Card.Data)
	m.Answered = append(m.Answered, m.Content)
}
