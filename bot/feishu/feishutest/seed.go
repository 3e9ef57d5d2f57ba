package feishutest

import (
	"fmt"
	"time"
)

// SeedCard puts a card into chatID as if the bot had sent it at sentAt (the zero time
// means Now), without a request, and returns it. It is for tests that need many cards
// out already — thousands of carded issues, say — without paying for them at the
// chat's rate limit: no token is checked, no rate limit or injected failure applies, no
// uuid is taken, nothing is added to Requests and AfterSend is not called. Otherwise
// the message is one the API could have created: replies to it go into its thread, and
// it can be patched (within PatchWindow of sentAt), reacted to and recalled. The bot
// must be in the chat and card must be a card the platform accepts; if not, the test
// fails and the zero Message is returned.
func (s *Server) SeedCard(chatID, card string, sentAt time.Time) Message {
	s.t.Helper()
	if code, msg := checkContent("interactive", card); code != 0 {
		s.t.Errorf("feishutest: SeedCard: the platform refuses the card: %d %s", code, msg)
		return Message{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.chats[chatID] {
		s.t.Errorf("feishutest: SeedCard: the bot is not in chat %s", chatID)
		return Message{}
	}
	if sentAt.IsZero() {
		sentAt = s.Now()
	}
	m := &Message{
		ID: fmt.Sprintf("om_%d", s.next("om")), ChatID: chatID, MsgType: "interactive", Content: card,
		SenderID: s.AppID, SenderType: "app", Created: sentAt,
	}
	s.msgs[m.ID] = m
	s.order = append(s.order, m.ID)
	return m.clone()
}
