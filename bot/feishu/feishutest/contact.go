package feishutest

import (
	"net/http"
	"strings"
)

// AddUser makes openID known to the contact API, with name as both name and en_name.
func (s *Server) AddUser(openID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[openID] = name
}

// UserLookups reports how many times openID was looked up, found or not, so a name cache can
// be tested.
func (s *Server) UserLookups(openID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups[openID]
}

// Feishu API: GET /open-apis/contact/v3/users/:user_id?user_id_type=open_id
func (s *Server) getUser(w *recorder, r *http.Request) {
	// open_id is the platform's default id type; the fake knows no other.
	if typ := r.URL.Query().Get("user_id_type"); typ != "" && typ != "open_id" {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "feishutest: only user_id_type=open_id is supported")
		return
	}
	id := r.PathValue("user_id")
	s.mu.Lock()
	s.lookups[id]++
	name, ok := s.users[id]
	s.mu.Unlock()
	if !ok {
		// Unverified: an open_id outside the app's contact range answers 41050; the fake treats
		// every unknown user that way.
		s.fail(w, http.StatusBadRequest, CodeNoUserAuthority, "no user authority error")
		return
	}
	s.ok(w, map[string]any{"user": map[string]any{
		"open_id":  id,
		"union_id": "on_" + strings.TrimPrefix(id, "ou_"),
		"name":     name,
		"en_name":  name,
	}})
}

// Feishu API: GET /open-apis/bot/v3/info (no SDK method; the body has "bot", not "data").
func (s *Server) botInfo(w *recorder, r *http.Request) {
	s.writeJSON(w, http.StatusOK, CodeOK, map[string]any{
		"code": 0, "msg": "ok",
		"bot": map[string]any{"open_id": s.BotOpenID, "app_name": s.BotName, "activate_status": 2},
	})
}
