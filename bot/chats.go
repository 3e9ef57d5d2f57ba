package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"issuebot/bot/feishu"
	"issuebot/store"
)

// The groups the bot is in: their names (for replies that say where they came from),
// the welcome card when the bot is added, and the goodbye when it is removed or the
// group is disbanded: the group's routes go, its queued work ends, and nothing more is
// sent there.

// metaChatLeft and metaChatJoined are the store's names (+ chat id) for when the bot
// last left a chat and last joined it (RFC 3339, the events' times): the later one
// holds, so events taken out of order (Feishu redelivers for hours) cannot leave a
// chat the bot is in marked as left.
const (
	metaChatLeft   = "chat.left:"
	metaChatJoined = "chat.joined:"
)

// chatNameTTL is how long a group's name is remembered.
const chatNameTTL = time.Hour

// chatCache remembers group names.
type chatCache struct {
	mu    sync.Mutex
	names map[string]cachedChat
}

type cachedChat struct {
	name string
	at   time.Time
}

// chatName returns a group's name, or its chat id when Feishu does not say.
func (b *Bot) chatName(ctx context.Context, chatID string) string {
	c := &b.chats
	c.mu.Lock()
	if n, ok := c.names[chatID]; ok && b.now().Sub(n.at) < chatNameTTL {
		c.mu.Unlock()
		return n.name
	}
	c.mu.Unlock()
	nctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	info, err := b.feishu.ChatInfo(nctx, chatID)
	if err != nil {
		b.logger.Warn("look up a group's name", "chat_id", chatID, "err", err)
		return chatID
	}
	name := cmp.Or(info.Name, chatID)
	c.mu.Lock()
	if c.names == nil || len(c.names) > 1000 {
		c.names = map[string]cachedChat{}
	}
	c.names[chatID] = cachedChat{name: name, at: b.now()}
	c.mu.Unlock()
	return name
}

// chatLeft reports whether the bot left a chat (removed, or the group disbanded) and
// was not added again since.
func (b *Bot) chatLeft(ctx context.Context, chatID string) (bool, error) {
	left, err := b.state.Meta(ctx, metaChatLeft+chatID)
	if err != nil || left == "" {
		return false, wrapChatErr(err, chatID)
	}
	joined, err := b.state.Meta(ctx, metaChatJoined+chatID)
	if err != nil {
		return false, wrapChatErr(err, chatID)
	}
	lt, _ := time.Parse(time.RFC3339Nano, left)
	jt, _ := time.Parse(time.RFC3339Nano, joined)
	return joined == "" || lt.After(jt), nil
}

func wrapChatErr(err error, chatID string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("check whether the bot left chat %s: %w", chatID, err)
}

// eventStamp is when a chat event happened, for ordering joins and leaves.
func (b *Bot) eventStamp(e feishu.ChatEvent) string {
	t := e.EventTime
	if t.IsZero() {
		t = b.now()
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// stampLater sets a chat's join or leave time unless a later one is kept.
func (b *Bot) stampLater(ctx context.Context, name, stamp string) error {
	cur, err := b.state.Meta(ctx, name)
	if err != nil {
		return err
	}
	ct, _ := time.Parse(time.RFC3339Nano, cur)
	st, _ := time.Parse(time.RFC3339Nano, stamp)
	if cur != "" && !st.After(ct) {
		return nil
	}
	return b.state.SetMeta(ctx, name, stamp)
}

// HandleBotAdded receives im.chat.member.bot.added_v1: the chat is live again (if the
// bot had left it before) and gets the welcome card.
func (b *Bot) HandleBotAdded(ctx context.Context, e feishu.ChatEvent) error {
	b.metrics.observeEvent("bot_added", b.now(), e.EventTime)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := b.stampLater(ctx, metaChatJoined+e.ChatID, b.eventStamp(e)); err != nil {
		return fmt.Errorf("record the bot added to chat %s: %w", e.ChatID, err)
	}
	// One welcome per event (Feishu may deliver it twice, with the same event id).
	if err := b.queueAnswer(ctx, answerJob{ChatID: e.ChatID, Kind: answerWelcome, Key: cmp.Or(e.EventID, e.ChatID)}); err != nil {
		return err
	}
	b.metrics.chatEvents.WithLabelValues("added").Inc()
	b.logger.InfoContext(ctx, "bot added to chat; welcome queued", "chat_id", e.ChatID)
	return nil
}

// HandleBotRemoved receives im.chat.member.bot.deleted_v1 and im.chat.disbanded_v1:
// the chat's routes are dropped at once, and the chat is marked left, which ends its
// queued work (cards go where the remaining routes say, posts and answers end). A
// job then takes its cards out of the issue records, so nothing more goes there.
func (b *Bot) HandleBotRemoved(ctx context.Context, e feishu.ChatEvent) error {
	kind := "removed"
	if e.Disbanded {
		kind = "disbanded"
	}
	b.metrics.observeEvent("bot_"+kind, b.now(), e.EventTime)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := b.stampLater(ctx, metaChatLeft+e.ChatID, b.eventStamp(e)); err != nil {
		return fmt.Errorf("record the bot leaving chat %s: %w", e.ChatID, err)
	}
	if left, err := b.chatLeft(ctx, e.ChatID); err != nil || !left {
		return err // added again since (this event came late): nothing to drop
	}
	n, err := b.dropRoutes(ctx, e.ChatID)
	if err != nil {
		return err
	}
	if err := b.queueAnswer(ctx, answerJob{ChatID: e.ChatID, Kind: answerGoodbye, Key: cmp.Or(e.EventID, e.ChatID)}); err != nil {
		return err
	}
	b.metrics.chatEvents.WithLabelValues(kind).Inc()
	b.logger.InfoContext(ctx, "bot left a chat; its routes are dropped", "chat_id", e.ChatID, "how", kind, "routes", n)
	return nil
}

// dropRoutes deletes every route of a chat and returns how many there were.
func (b *Bot) dropRoutes(ctx context.Context, chatID string) (int, error) {
	rs, err := b.state.Routes(ctx)
	if err != nil {
		return 0, fmt.Errorf("read routes: %w", err)
	}
	n := 0
	for _, r := range rs {
		if r.ChatID != chatID {
			continue
		}
		if err := b.state.DeleteRoute(ctx, r.ChatID, r.ChannelUUID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, fmt.Errorf("delete route of chat %s: %w", chatID, err)
		}
		n++
	}
	b.metrics.setRoutes(len(rs) - n)
	return n, nil
}

// forgetChat takes a chat the bot left out of every issue record (its cards are no
// longer patched, posted to or watched for) and ends its storm digest.
func (b *Bot) forgetChat(ctx context.Context, chatID string) error {
	// Under the storm lock: a digest's render finishing meanwhile must not write the
	// state back.
	b.storm.mu.Lock()
	err := b.setStormMeta(ctx, chatID, "")
	b.storm.mu.Unlock()
	if err != nil {
		return fmt.Errorf("forget the storm state of chat %s: %w", chatID, err)
	}
	recs, err := b.state.ListIssues(ctx)
	if err != nil {
		return fmt.Errorf("list issue records: %w", err)
	}
	for _, r := range recs {
		if r.Card(chatID) == nil {
			continue
		}
		if err := b.forgetCard(ctx, r.IssueUUID, chatID); err != nil {
			return err
		}
	}
	return nil
}

// forgetCard takes an issue's card in a chat out of its record.
func (b *Bot) forgetCard(ctx context.Context, issueUUID, chatID string) error {
	_, _, err := b.updateIssue(ctx, issueUUID, func(x *store.Issue) error {
		if x.Card(chatID) == nil {
			return errUnchanged
		}
		x.Cards = slices.DeleteFunc(x.Cards, func(c store.Card) bool { return c.ChatID == chatID })
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

var _ feishu.Handler = (*Bot)(nil)
