package feishutest

import (
	"net/http"
	"slices"
)

// CodeNotInChatOperator is what chat APIs answer when the bot is not in the group
// (unverified: the message APIs answer 230002; the chat APIs are documented with
// 232011 "operator is not in the chat").
const CodeNotInChatOperator = 232011

// ChatSpec describes a group for the chat info API.
type ChatSpec struct {
	Name string
	// OwnerOnly sets edit_permission to "only_owner" (else "all_members").
	OwnerOnly bool
	Owner     string   // open_id
	Managers  []string // open_ids
}

// SetChat puts the bot into chatID (as AddChat) and describes the group.
func (s *Server) SetChat(chatID string, c ChatSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chats[chatID] = true
	c.Managers = slices.Clone(c.Managers)
	s.chatInfo[chatID] = c
}

// ChatInfoLookups reports how many times the chat info API was asked about chatID.
func (s *Server) ChatInfoLookups(chatID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups["chat "+chatID]
}

// Feishu API: GET /open-apis/im/v1/chats/:chat_id?user_id_type=open_id
func (s *Server) getChat(w *recorder, r *http.Request) {
	if typ := r.URL.Query().Get("user_id_type"); typ != "" && typ != "open_id" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "feishutest: only user_id_type=open_id is supported")
		return
	}
	id := r.PathValue("chat_id")
	s.mu.Lock()
	s.lookups["chat "+id]++
	in := s.chats[id]
	c, described := s.chatInfo[id]
	s.mu.Unlock()
	if !in {
		s.fail(w, http.StatusBadRequest, CodeNotInChatOperator, "operator is not in the chat")
		return
	}
	if !described {
		c = ChatSpec{Name: "test chat " + id}
	}
	perm := "all_members"
	if c.OwnerOnly {
		perm = "only_owner"
	}
	data := map[string]any{
		"name": c.Name, "description": "", "edit_permission": perm, "add_member_permission": "all_members",
		"chat_mode": "group", "chat_type": "private", "external": false, "tenant_key": s.TenantKey,
		"user_manager_id_list": c.Managers, "bot_manager_id_list": []string{},
	}
	if c.Owner != "" {
		data["owner_id"], data["owner_id_type"] = c.Owner, "open_id"
	}
	s.ok(w, data)
}

// Feishu API: GET /open-apis/im/v1/chats/:chat_id/members/is_in_chat
func (s *Server) isInChat(w *recorder, r *http.Request) {
	id := r.PathValue("chat_id")
	s.mu.Lock()
	in := s.chats[id]
	s.mu.Unlock()
	s.ok(w, map[string]any{"is_in_chat": in})
}
