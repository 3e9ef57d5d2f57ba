package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/bot/plaintext"
	"issuebot/store"
)

// Storms: when more than StormThreshold new issues would go to one chat within a
// minute, the next ones go into one live digest card in that chat instead of a card
// each, until fewer than the threshold arrive for five minutes. Each digested issue
// has a card entry in its record (store.Card.Digest, no message), so it is watched,
// listed by @bot list and counted in the digest; the digest's "Card" button posts its
// own live card into the chat and points to it from the digest's thread. The storm
// state of a chat is kept in the store, so a restart goes on with the same digest.

// metaStorm is the store's name (+ chat id) for a chat's storm state.
const metaStorm = "storm:"

// stormCalmWindows is how many budget windows (minutes) of fewer arrivals end a storm.
const stormCalmWindows = 5

// stormState is a chat's storm state.
type stormState struct {
	// Arrivals are the chat's recent new issues (the last few windows).
	Arrivals []arrival `json:"arrivals,omitempty"`
	// LastHot is the last time a window held more arrivals than the threshold.
	LastHot time.Time `json:"last_hot,omitzero"`
	// Storms are the current storm (last) and the one before it, whose ended digest may
	// still be due its final render.
	Storms []stormDigest `json:"storms,omitempty"`
}

// arrival is a new issue for a chat.
type arrival struct {
	At    time.Time `json:"at"`
	Issue string    `json:"issue"`
	// Storm is the storm the issue went into, "" for a card of its own.
	Storm string `json:"storm,omitempty"`
}

// stormDigest is one storm's digest card.
type stormDigest struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
	// Members are the issues of the window that started the storm, which got cards of
	// their own: the digest counts them too.
	Members   []string  `json:"members,omitempty"`
	Ended     time.Time `json:"ended,omitzero"`
	MessageID string    `json:"message_id,omitempty"`
	// Final is set once the ended digest was rendered as ended.
	Final bool `json:"final,omitempty"`
}

// rendering reports whether storm id's digest is still rendered (not final).
func (s *stormState) rendering(id string) bool {
	return slices.ContainsFunc(s.Storms, func(d stormDigest) bool { return d.ID == id && !d.Final })
}

// current returns the storm going on, or nil.
func (s *stormState) current() *stormDigest {
	if n := len(s.Storms); n > 0 && s.Storms[n-1].Ended.IsZero() {
		return &s.Storms[n-1]
	}
	return nil
}

// storms serialises the storm state changes of this process (the leader's card,
// digest and storm-end jobs of a chat run on different queues).
type storms struct{ mu sync.Mutex }

func (b *Bot) loadStorm(ctx context.Context, chatID string) (stormState, error) {
	var s stormState
	raw, err := b.state.Meta(ctx, metaStorm+chatID)
	if err != nil {
		return s, fmt.Errorf("read the storm state of chat %s: %w", chatID, err)
	}
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			b.logger.Warn("unreadable storm state; starting calm", "chat_id", chatID, "err", err)
			return stormState{}, nil
		}
	}
	return s, nil
}

func (b *Bot) saveStorm(ctx context.Context, chatID string, s stormState) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode the storm state: %w", err)
	}
	return b.setStormMeta(ctx, chatID, string(raw))
}

// setStormMeta writes a chat's storm state for this leader's term: a deposed leader's
// late write (a job finishing after its lease ran out) is refused and its work left to
// the new leader, so it cannot undo the new leader's counts, storms or ends.
func (b *Bot) setStormMeta(ctx context.Context, chatID, raw string) error {
	term := b.term.Load()
	ok := false
	var err error
	if term > 0 {
		ok, err = b.state.SetMetaFenced(ctx, leasePoller, term, metaStorm+chatID, raw)
	}
	if err != nil {
		return fmt.Errorf("keep the storm state of chat %s: %w", chatID, err)
	}
	if !ok {
		return fmt.Errorf("keep the storm state of chat %s: no longer the leader: %w", chatID, errAbandoned)
	}
	return nil
}

// stormGate counts a new issue for a chat and decides whether it goes into the chat's
// storm digest: it returns the storm's id, or "" for a card of its own. An issue gated
// again (its poll was cut short before it was marked seen) goes where it went the first
// time: a storm that began in between must not take an issue whose card may be out.
func (b *Bot) stormGate(ctx context.Context, chatID, issueUUID string) (string, error) {
	if b.cfg.StormThreshold <= 0 {
		return "", nil
	}
	b.storm.mu.Lock()
	defer b.storm.mu.Unlock()
	s, err := b.loadStorm(ctx, chatID)
	if err != nil {
		return "", err
	}
	now, win := b.now(), b.cfg.BudgetWindow
	s.Arrivals = slices.DeleteFunc(s.Arrivals, func(a arrival) bool { return now.Sub(a.At) > stormCalmWindows*win })
	me := slices.IndexFunc(s.Arrivals, func(a arrival) bool { return a.Issue == issueUUID })
	if me >= 0 && (s.Arrivals[me].Storm == "" || s.rendering(s.Arrivals[me].Storm)) {
		return s.Arrivals[me].Storm, nil
	}
	if me < 0 {
		s.Arrivals = append(s.Arrivals, arrival{At: now, Issue: issueUUID})
		me = len(s.Arrivals) - 1
	}
	var window []string
	for _, a := range s.Arrivals {
		if now.Sub(a.At) <= win && a.Issue != issueUUID && !slices.Contains(window, a.Issue) {
			window = append(window, a.Issue)
		}
	}
	inWindow := len(window) + 1
	if inWindow > b.cfg.StormThreshold {
		s.LastHot = now
	}
	cur := s.current()
	if cur == nil && inWindow > b.cfg.StormThreshold {
		if n := len(s.Storms); n > 0 && !s.Storms[n-1].Final {
			s.Storms = s.Storms[n-1:] // the last one still owes its final render
		} else {
			s.Storms = nil
		}
		s.Storms = append(s.Storms, stormDigest{ID: strconv.FormatInt(now.UnixNano(), 36), Since: now, Members: window})
		cur = &s.Storms[len(s.Storms)-1]
		b.logger.Warn("issue storm: new issues for this chat go into one digest", "chat_id", chatID,
			"in_window", inWindow, "threshold", b.cfg.StormThreshold)
	}
	id := ""
	if cur != nil {
		id = cur.ID
		if err := b.patches.Enqueue(ctx, "stormend:"+chatID, patchJob{ChatID: chatID, StormEnd: true},
			s.LastHot.Add(stormCalmWindows*win)); err != nil {
			return "", fmt.Errorf("schedule the storm's end check: %w", err)
		}
	}
	s.Arrivals[me].Storm = id
	if err := b.saveStorm(ctx, chatID, s); err != nil {
		return "", err
	}
	return id, nil
}

// digestIssue records an issue as part of a chat's storm digest and queues the
// digest's render. An issue recorded in the chat already (by an earlier try, perhaps
// carded from the digest since) keeps its entry: the store never lets a digest's entry
// replace a chat's card (AddCard), so a posted card is never forgotten.
func (b *Bot) digestIssue(ctx context.Context, p cardJob, stormID string) error {
	base := storeIssue(p.Issue)
	base.Snapshot = b.snapshot(p.Issue)
	entry := store.Card{ChatID: p.ChatID, Digest: stormID, SentAt: b.now()}
	rec, err := b.state.AddCard(ctx, base, entry)
	if err != nil {
		return fmt.Errorf("record issue %s in the digest: %w", p.Issue.UUID, err)
	}
	if c := rec.Card(p.ChatID); c != nil && c.MessageID == "" && c.SentAt.Equal(entry.SentAt) {
		b.metrics.digested.Inc() // this try's entry, not an earlier one's
	}
	return b.queueDigest(ctx, p.ChatID)
}

// queueDigest asks for a chat's digest to be rendered, at most once a second.
func (b *Bot) queueDigest(ctx context.Context, chatID string) error {
	at := latest(b.now(), b.patchClock.last("digest:"+chatID).Add(patchEvery))
	if err := b.patches.Enqueue(ctx, "digest:"+chatID, patchJob{ChatID: chatID, Digest: true}, at); err != nil {
		return fmt.Errorf("queue the digest of chat %s: %w", chatID, err)
	}
	return nil
}

// stormEnd ends a chat's storm once fewer than the threshold arrived for five windows.
func (b *Bot) stormEnd(ctx context.Context, chatID string) error {
	if left, err := b.chatLeft(ctx, chatID); err != nil || left {
		return err
	}
	b.storm.mu.Lock()
	s, err := b.loadStorm(ctx, chatID)
	if err != nil {
		b.storm.mu.Unlock()
		return err
	}
	cur := s.current()
	if cur == nil {
		b.storm.mu.Unlock()
		return nil
	}
	if calm := s.LastHot.Add(stormCalmWindows * b.cfg.BudgetWindow); b.now().Before(calm) {
		b.storm.mu.Unlock()
		return jobs.Later(calm.Sub(b.now()), errors.New("the storm goes on"))
	}
	cur.Ended = b.now()
	err = b.saveStorm(ctx, chatID, s)
	b.storm.mu.Unlock()
	if err != nil {
		return err
	}
	b.logger.Info("issue storm over: single cards resume", "chat_id", chatID, "since", cur.Since)
	return b.queueDigest(ctx, chatID)
}

// digestUUID is the Feishu idempotency key of a storm's digest card.
func digestUUID(chatID, stormID string) string {
	sum := sha256.Sum256([]byte(chatID + "\x00" + stormID))
	return "ibd-" + hex.EncodeToString(sum[:])[:40]
}

// renderDigests posts or patches the digest of the chat's current storm, and gives an
// ended storm's digest its final render.
func (b *Bot) renderDigests(ctx context.Context, chatID string) error {
	if wait := b.patchClock.last("digest:" + chatID).Add(patchEvery); b.now().Before(wait) {
		return jobs.Later(wait.Sub(b.now()), errors.New("rendered less than a second ago"))
	}
	if left, err := b.chatLeft(ctx, chatID); err != nil || left {
		return err // nothing more goes into a chat the bot left
	}
	b.storm.mu.Lock()
	s, err := b.loadStorm(ctx, chatID)
	b.storm.mu.Unlock()
	if err != nil {
		return err
	}
	recs, err := b.state.ListIssues(ctx)
	if err != nil {
		return fmt.Errorf("list issue records: %w", err)
	}
	b.patchClock.mark("digest:"+chatID, b.now())
	incomplete, posted := false, false
	for _, d := range s.Storms {
		if d.Final {
			continue
		}
		msg, err := b.renderDigest(ctx, chatID, d, recs)
		if err != nil {
			return err
		}
		// An ended digest is final once it counts the cards of the window that started
		// the storm (they go out at Feishu's pace, perhaps after the storm) — or, should
		// one never be recorded, ten windows after the end. A digest just posted is not:
		// if an earlier post's answer was lost (or the bot died before reading it), the
		// post got that message back, showing what the digest counted then.
		complete := digestComplete(chatID, d, recs) || (!d.Ended.IsZero() && b.now().Sub(d.Ended) > 10*b.cfg.BudgetWindow)
		if err := b.noteDigest(ctx, chatID, d.ID, msg, !d.Ended.IsZero() && complete && d.MessageID != ""); err != nil {
			return err
		}
		incomplete = incomplete || !complete
		posted = posted || d.MessageID == ""
	}
	switch {
	case incomplete:
		return jobs.Later(max(b.cfg.BudgetWindow/30, patchEvery), errors.New("waiting for the storm's first cards to be recorded"))
	case posted:
		return jobs.Later(patchEvery, errors.New("a digest just posted is rendered once more"))
	}
	return nil
}

// digestComplete reports whether every issue of the window that started a storm has
// its card in the chat recorded.
func digestComplete(chatID string, d stormDigest, recs []store.Issue) bool {
	have := map[string]bool{}
	for _, r := range recs {
		if r.Card(chatID) != nil {
			have[r.IssueUUID] = true
		}
	}
	for _, m := range d.Members {
		if !have[m] {
			return false
		}
	}
	return true
}

// renderDigest renders one storm's digest and posts or patches it; it returns the
// digest's message id.
func (b *Bot) renderDigest(ctx context.Context, chatID string, d stormDigest, recs []store.Issue) (string, error) {
	var items []cards.DigestItem
	for _, r := range recs {
		c := r.Card(chatID)
		if c == nil || (c.Digest != d.ID && !slices.Contains(d.Members, r.IssueUUID)) {
			continue
		}
		is, snap, _ := recordIssue(r)
		name := snap.LevelName
		if l, ok := b.levels.get(is.Level); ok {
			name = l.Name
		}
		items = append(items, cards.DigestItem{Issue: is, LevelName: name, Carded: c.MessageID != ""})
	}
	slices.SortFunc(items, func(x, y cards.DigestItem) int {
		return cmp.Or(-x.Issue.CreateAt.Time().Compare(y.Issue.CreateAt.Time()), cmp.Compare(y.Issue.UUID, x.Issue.UUID))
	})
	card, err := cards.Digest(cards.DigestData{Items: items, Since: d.Since, Ended: d.Ended, Location: b.cfg.Location})
	if err != nil {
		return "", err
	}
	if d.MessageID == "" {
		if !b.pacer.wait(ctx, chatID) {
			return "", errAbandoned
		}
		sent, err := b.feishu.SendCard(ctx, chatID, card, digestUUID(chatID, d.ID))
		if err != nil {
			return "", fmt.Errorf("post the storm digest to chat %s: %w", chatID, err)
		}
		b.metrics.cardsSent.Inc()
		return sent.MessageID, nil
	}
	err = b.feishu.PatchCard(ctx, d.MessageID, card)
	var fe *feishu.Error
	if errors.As(err, &fe) && (fe.PatchWindowEnded() || fe.MessageGone()) {
		return d.MessageID, nil // an old or recalled digest stays as it is
	}
	if err != nil {
		return "", fmt.Errorf("patch the storm digest %s: %w", d.MessageID, err)
	}
	b.metrics.cardPatches.Inc()
	return d.MessageID, nil
}

// noteDigest keeps a digest's message id, and marks an ended digest rendered for good.
func (b *Bot) noteDigest(ctx context.Context, chatID, stormID, messageID string, final bool) error {
	b.storm.mu.Lock()
	defer b.storm.mu.Unlock()
	s, err := b.loadStorm(ctx, chatID)
	if err != nil {
		return err
	}
	for i := range s.Storms {
		if d := &s.Storms[i]; d.ID == stormID {
			d.MessageID = messageID
			d.Final = d.Final || (final && !d.Ended.IsZero())
		}
	}
	return b.saveStorm(ctx, chatID, s)
}

// pointFromDigest says in a digest's thread that an issue's own card was posted (best
// effort: the card is out either way).
func (b *Bot) pointFromDigest(ctx context.Context, p *cardJob, messageID string) {
	text := "「" + plaintext.Truncate(p.Issue.Name, cards.TitleRunes, "…") + "」已单独发出卡片，在它的话题里回复。\n" +
		"Its own card is posted in the chat: reply in that card's thread."
	sum := sha256.Sum256([]byte(p.Thread + "\x00" + messageID))
	if !b.pacer.wait(ctx, p.ChatID) {
		return
	}
	if _, err := b.feishu.ReplyText(ctx, p.Thread, text, true, "ibp-"+hex.EncodeToString(sum[:])[:40]); err != nil {
		b.logger.Warn("point from the digest to the issue's card", "issue_uuid", p.Issue.UUID, "err", err)
	}
	if err := b.queueDigest(ctx, p.ChatID); err != nil {
		b.logger.Warn("queue the digest's render", "chat_id", p.ChatID, "err", err)
	}
}

// cardFromDigest answers a digest's "Card" button: the issue's own live card is queued
// for the chat (Feishu threads have one level, so a card inside the digest's thread
// could have no thread of its own), and the digest's thread points to it.
func (b *Bot) cardFromDigest(ctx context.Context, a feishu.CardAction, act cards.Action) (feishu.CardResponse, error) {
	rec, err := b.state.GetIssue(ctx, act.IssueUUID)
	if errors.Is(err, store.ErrNotFound) {
		return toastOnly("error", "找不到这个 Issue 的记录。", "This issue is not known to the bot."), nil
	}
	if err != nil {
		b.logger.Error("card action: read issue record", "issue_uuid", act.IssueUUID, "err", err)
		return toastOnly("error", "机器人暂时无法处理，请稍后再试。", "The bot cannot handle this right now; try again shortly."), nil
	}
	c := rec.Card(a.ChatID)
	switch {
	case c == nil || c.Digest == "":
		return toastOnly("warning", "这个 Issue 不在本群的汇总里。", "This issue is not in this chat's digest."), nil
	case c.MessageID != "":
		return toastOnly("info", "这个 Issue 的卡片已经发出。", "The issue's card is posted already."), nil
	}
	is, _, _ := recordIssue(rec)
	job := cardJob{Issue: is, ChatID: a.ChatID, Thread: a.MessageID}
	if err := b.cards.Enqueue(ctx, cardJobID(is.UUID, a.ChatID), job, b.now()); err != nil {
		b.logger.Error("queue a card from the digest", "issue_uuid", is.UUID, "err", err)
		return toastOnly("error", "机器人暂时无法处理，请稍后再试。", "The bot cannot handle this right now; try again shortly."), nil
	}
	b.logger.Info("card from the storm digest queued", "issue_uuid", is.UUID, "chat_id", a.ChatID)
	return toastOnly("success", "这个 Issue 的卡片马上发出，汇总的话题里会有提示。", "The issue's card is on its way; the digest's thread will point to it."), nil
}
