package bot

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"issuebot/bot/cards"
	"issuebot/store"
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
	var open []store.Issue
	for _, r := range recs {
		if c := r.Card(chat); c != nil && !r.Gone && !statusDone(r.StatusType) {
			open = append(open, r)
		}
	}
	slices.SortFunc(open, func(x, y store.Issue) int {
		return cmp.Or(cmp.Compare(levelRank(x.Level), levelRank(y.Level)), -cmp.Compare(x.CreateAt, y.CreateAt))
	})
	var items []cards.ListItem
	for _, r := range open[:min(len(open), cards.ListMax)] {
		if full, err := b.state.GetIssue(ctx, r.IssueUUID); err == nil {
			r = full // with its snapshot: the workspace for the link, the level's name
		}
		is, snap, _ := recordIssue(r)
		name := snap.LevelName
		if l, ok := b.levels.get(is.Level); ok {
			name = l.Name
		}
		items = append(items, cards.ListItem{Issue: is, LevelName: name, CardAt: r.Card(chat).SentAt})
	}
	return cards.List(cards.ListData{Items: items, Total: len(open), Now: b.now(), ConsoleURL: b.cfg.ConsoleURL,
		Location: b.cfg.Location})
}
