package bot

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"issuebot/bot/cards"
)

// listCard renders the open issues carded in the asking chat (a direct chat sees the
// default chat's), highest level first, newest first within a level.
func (b *Bot) listCard(ctx context.Context, p answerJob) ([]byte, error) {
	chat := p.ChatID
	if p.Direct {
		chat = b.cfg.ChatID
	}
	recs, err := b.state.ListIssues(ctx)
	if err != nil {
		return nil, fmt.Errorf("list issue records: %w", err)
	}
	var items []cards.ListItem
	for _, r := range recs {
		c := r.Card(chat)
		if c == nil || r.Gone || statusDone(r.StatusType) {
			continue
		}
		is, snap, _ := recordIssue(r)
		name := snap.LevelName
		if l, ok := b.levels.get(is.Level); ok {
			name = l.Name
		}
		items = append(items, cards.ListItem{Issue: is, LevelName: name, CardAt: c.SentAt})
	}
	slices.SortFunc(items, func(x, y cards.ListItem) int {
		return cmp.Or(cmp.Compare(levelRank(levelName(x)), levelRank(levelName(y))),
			-x.Issue.CreateAt.Time().Compare(y.Issue.CreateAt.Time()))
	})
	return cards.List(cards.ListData{Items: items, Total: len(items), Now: b.now(), ConsoleURL: b.cfg.ConsoleURL,
		Location: b.cfg.Location})
}

// levelName is a list item's level as routes rank it.
func levelName(it cards.ListItem) string { return string(it.Issue.Level) }
