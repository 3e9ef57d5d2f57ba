package bot

import (
	"context"
	"sync"
	"time"
)

// chatPacer spaces the bot's messages into each chat (Feishu allows 5 per second per
// chat, shared by every bot in it). Cards, thread posts and notices all take their
// turn here, so together they stay under the limit.
type chatPacer struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	next map[string]time.Time // the earliest time the chat's next message may go
}

func newChatPacer(every time.Duration, now func() time.Time) *chatPacer {
	return &chatPacer{every: every, now: now, next: map[string]time.Time{}}
}

// wait reserves the chat's next turn and sleeps until it comes. It returns false, and
// gives the turn back, if ctx ends first.
func (p *chatPacer) wait(ctx context.Context, chatID string) bool {
	p.mu.Lock()
	now := p.now()
	at := latest(now, p.next[chatID])
	p.next[chatID] = at.Add(p.every)
	if len(p.next) > 1024 {
		for c, t := range p.next { // forget chats that have been quiet
			if t.Before(now) {
				delete(p.next, c)
			}
		}
	}
	p.mu.Unlock()
	if d := at.Sub(now); d > 0 && !sleepCtx(ctx, d) {
		p.mu.Lock()
		if p.next[chatID].Equal(at.Add(p.every)) {
			p.next[chatID] = at
		}
		p.mu.Unlock()
		return false
	}
	return ctx.Err() == nil
}
