package bot

import (
	"context"

	"issuebot/bot/feishu"
)

var _ feishu.Handler = (*Bot)(nil)

// HandleBotAdded receives im.chat.member.bot.added_v1.
func (b *Bot) HandleBotAdded(ctx context.Context, e feishu.ChatEvent) error {
	b.metrics.observeEvent("bot_added", b.now(), e.EventTime)
	b.logger.InfoContext(ctx, "bot added to chat", "chat_id", e.ChatID)
	return nil
}

// HandleBotRemoved receives im.chat.member.bot.deleted_v1.
func (b *Bot) HandleBotRemoved(ctx context.Context, e feishu.ChatEvent) error {
	b.metrics.observeEvent("bot_removed", b.now(), e.EventTime)
	b.logger.InfoContext(ctx, "bot removed from chat", "chat_id", e.ChatID)
	return nil
}
