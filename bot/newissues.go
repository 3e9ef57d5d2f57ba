package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"issuebot/guance"
	"issuebot/store"
)

// Store names used by the poller.
const (
	cursorNewIssues = "issues.createAt"     // newest server createAt seen (unix s)
	cursorBootstrap = "issues.bootstrapped" // 1 once the first poll has run
	cursorFirstTry  = "issues.firstStart"   // unix s of the first poll attempt ever
	metaChannel     = "guance.channel:"     // + channel name: its uuid
	metaLevels      = "guance.levels"       // JSON storedLevels
	levelRefresh    = 10 * time.Minute
)

func (b *Bot) logPollError(err error) {
	switch {
	case errors.Is(err, guance.ErrThrottled):
		b.logger.Warn("guance throttled the poll; backing off", "err", err)
	case errors.Is(err, guance.ErrBadKey):
		b.logger.Error("Guance refused GUANCE_API_KEY; no issue can be read until it is fixed", "err", err)
	default:
		b.logger.Warn("poll failed; next cycle retries", "err", err)
	}
}

// pollOnce lists the watched channel over a window that overlaps the previous ones,
// anchored on the newest server createAt seen, and queues a card for every issue not
// seen before. Issues are marked seen only after their card job is stored, and the
// cursor moves only after that, so a crash at any point repeats work instead of
// losing it (duplicates are stopped by the seen set and the job id).
func (b *Bot) pollOnce(ctx context.Context) error {
	started := b.now()
	defer func() { b.metrics.pollDuration.Observe(b.now().Sub(started).Seconds()) }()
	ctx = guance.WithPriority(ctx, guance.PriorityNormal)

	cursor, err := b.state.Cursor(ctx, cursorNewIssues)
	if err != nil {
		return fmt.Errorf("read poll cursor: %w", err)
	}
	booted, err := b.state.Cursor(ctx, cursorBootstrap)
	if err != nil {
		return fmt.Errorf("read bootstrap mark: %w", err)
	}
	if cursor > 0 {
		booted = 1 // a crash between the two marks must not turn new issues into old ones
	}
	now := b.now()
	// What "already existed" at first start is judged against the first attempt, not the
	// first success: issues created while Guance was unreachable are new.
	firstTry, err := b.state.Cursor(ctx, cursorFirstTry)
	if err != nil {
		return fmt.Errorf("read first start: %w", err)
	}
	if booted == 0 && firstTry == 0 {
		if firstTry, err = b.state.AdvanceCursor(ctx, cursorFirstTry, now.Unix()); err != nil {
			return fmt.Errorf("record first start: %w", err)
		}
	}
	channel, err := b.watchedChannel(ctx)
	if err != nil {
		return err
	}
	start := now.Add(-b.cfg.FirstLookback)
	if cursor > 0 {
		start = time.Unix(cursor, 0).Add(-b.cfg.Overlap)
		// Everything visible at the previous poll was seen then, so an issue not seen
		// yet became visible since, and was created at most Overlap before that. After
		// a burst the window thus shrinks back to one page instead of listing the
		// burst on every poll until a newer issue moves the cursor.
		if last, err := b.state.Cursor(ctx, cursorLastPoll); err == nil && last > 0 {
			start = latest(start, time.Unix(last, 0).Add(-b.cfg.Overlap-b.cfg.ClockSkew))
		}
	}
	asked := b.now()
	issues, err := b.guance.ListAllIssues(ctx, guance.IssueQuery{
		ChannelUUID: channel, Start: start, End: now.Add(b.cfg.ClockSkew), PageSize: 100,
	})
	if err != nil {
		if errors.Is(err, guance.ErrNotFound) {
			b.forgetChannel(ctx)
		}
		return fmt.Errorf("list issues: %w", err)
	}
	b.levels.refresh(ctx, b)

	// On the very first poll, what already exists is marked seen rather than carded
	// (no flood), except issues young enough that someone may still be acting on them.
	youngSince := time.Unix(firstTry, 0).Add(-3 * b.cfg.PollInterval).Unix()
	maxCreate := cursor
	var old []string
	queued := 0
	listed := make(map[string]bool, len(issues))
	for _, is := range issues {
		maxCreate = max(maxCreate, is.CreateAt.Unix())
		if is.UUID == "" {
			continue
		}
		listed[is.UUID] = true
		if is.Deleted() {
			if err := b.markGone(ctx, is.UUID); err != nil {
				return fmt.Errorf("mark issue %s deleted: %w", is.UUID, err)
			}
			continue
		}
		if cursor > 0 && is.CreateAt.Unix() < cursor-int64(b.cfg.Overlap/time.Second) {
			// Older than every window since the cursor: an earlier poll judged it (its seen
			// mark may have expired since). It shows up only if the window filters on
			// something other than createAt.
			continue
		}
		seen, err := b.state.IssueSeen(ctx, is.UUID)
		if err != nil {
			return fmt.Errorf("check issue %s seen: %w", is.UUID, err)
		}
		if seen {
			// The row also tells a carded issue's status, level, title and updateAt: one
			// request answers the watcher's questions about every young issue.
			if err := b.observe(ctx, is, asked); err != nil {
				return fmt.Errorf("apply issue %s as listed: %w", is.UUID, err)
			}
			continue
		}
		if booted == 0 && is.CreateAt.Unix() < youngSince {
			old = append(old, is.UUID)
			continue
		}
		if err := b.queueCard(ctx, is); err != nil {
			return err
		}
		queued++
	}
	if err := b.flagUnlisted(ctx, listed, start.Add(b.cfg.ClockSkew)); err != nil {
		return err
	}
	b.pollFrom.Store(start.Add(b.cfg.ClockSkew).Unix())
	if len(old) > 0 {
		if err := b.state.MarkIssuesSeen(ctx, old...); err != nil {
			return fmt.Errorf("mark existing issues seen: %w", err)
		}
		b.logger.Info("first poll: existing issues marked seen, not carded", "count", len(old))
	}
	if maxCreate > cursor {
		if _, err := b.state.AdvanceCursor(ctx, cursorNewIssues, maxCreate); err != nil {
			return fmt.Errorf("advance poll cursor: %w", err)
		}
	}
	if booted == 0 {
		if _, err := b.state.AdvanceCursor(ctx, cursorBootstrap, 1); err != nil {
			return fmt.Errorf("mark bootstrap done: %w", err)
		}
	}
	b.metrics.polls.Inc()
	b.lastPoll.Store(now.UnixNano())
	if _, err := b.state.AdvanceCursor(ctx, cursorLastPoll, now.Unix()); err != nil {
		b.logger.Warn("record the poll time", "err", err)
	}
	if queued > 0 {
		b.logger.Info("new issues queued for cards", "count", queued, "listed", len(issues))
	}
	return nil
}

// flagUnlisted flags for a re-read every carded issue created since from that a
// complete poll did not list: the poll lists every issue of its window, whatever its
// status, so such an issue was deleted (or moved out of the channel). The poll thus
// does for young issues what the open-list sweep does for older ones.
func (b *Bot) flagUnlisted(ctx context.Context, listed map[string]bool, from time.Time) error {
	recs, err := b.state.ListSummaries(ctx)
	if err != nil {
		return fmt.Errorf("list issue summaries: %w", err)
	}
	for _, r := range recs {
		if listed[r.IssueUUID] || r.Gone || r.Refresh || r.Cards == 0 || r.CreateAt == 0 || time.Unix(r.CreateAt, 0).Before(from) {
			continue
		}
		if _, _, err := b.updateIssue(ctx, r.IssueUUID, func(x *store.Issue) error {
			if x.Refresh || x.Gone {
				return errUnchanged
			}
			x.Refresh = true
			return nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// watchedChannel returns the uuid of the watched channel, looked up by name once and
// kept in the store, so that a restart costs no request.
func (b *Bot) watchedChannel(ctx context.Context) (string, error) {
	b.channelMu.Lock()
	defer b.channelMu.Unlock()
	if b.channelUUID != "" {
		return b.channelUUID, nil
	}
	if id, err := b.state.Meta(ctx, metaChannel+b.cfg.Channel); err == nil && id != "" {
		b.channelUUID = id
		return id, nil
	}
	chans, err := b.guance.ListChannels(ctx)
	if err != nil {
		return "", fmt.Errorf("list channels: %w", err)
	}
	for _, c := range chans {
		if c.Name == b.cfg.Channel || c.UUID == b.cfg.Channel {
			b.channelUUID = c.UUID
			if err := b.state.SetMeta(ctx, metaChannel+b.cfg.Channel, c.UUID); err != nil {
				b.logger.Warn("keep the watched channel's uuid", "err", err)
			}
			return c.UUID, nil
		}
	}
	return "", fmt.Errorf("no Guance channel named %q among %d", b.cfg.Channel, len(chans))
}

// forgetChannel drops the watched channel's uuid: Guance no longer knows it (the channel
// may have been recreated).
func (b *Bot) forgetChannel(ctx context.Context) {
	b.channelMu.Lock()
	b.channelUUID = ""
	b.channelMu.Unlock()
	if err := b.state.SetMeta(ctx, metaChannel+b.cfg.Channel, ""); err != nil {
		b.logger.Warn("forget the watched channel's uuid", "err", err)
	}
}

// levelCache keeps the workspace's issue levels (names and colours of custom levels),
// refreshed at most every levelRefresh: one request, so it barely dents the budget.
type levelCache struct {
	mu      sync.Mutex
	byUUID  map[string]guance.Level
	fetched time.Time
}

func (c *levelCache) refresh(ctx context.Context, b *Bot) {
	c.mu.Lock()
	loaded := c.byUUID != nil
	c.mu.Unlock()
	if !loaded {
		c.load(ctx, b)
	}
	c.mu.Lock()
	due := b.now().Sub(c.fetched) >= levelRefresh
	if due {
		c.fetched = b.now() // one attempt per period, success or not
	}
	c.mu.Unlock()
	if !due {
		return
	}
	levels, err := b.guance.ListLevels(ctx)
	if err != nil {
		b.logger.Warn("list issue levels; cards show level ids", "err", err)
		return
	}
	c.set(levels, b.now())
	if data, err := json.Marshal(storedLevels{Fetched: b.now(), Levels: levels}); err == nil {
		if err := b.state.SetMeta(ctx, metaLevels, string(data)); err != nil {
			b.logger.Warn("keep the issue levels", "err", err)
		}
	}
}

// storedLevels is the level list as kept in the store, so that a restart costs no request.
type storedLevels struct {
	Fetched time.Time      `json:"fetched"`
	Levels  []guance.Level `json:"levels"`
}

// load takes the level list kept by an earlier run.
func (c *levelCache) load(ctx context.Context, b *Bot) {
	v, err := b.state.Meta(ctx, metaLevels)
	if err != nil || v == "" {
		return
	}
	var sl storedLevels
	if err := json.Unmarshal([]byte(v), &sl); err != nil {
		b.logger.Warn("ignore unreadable stored issue levels", "err", err)
		return
	}
	c.set(sl.Levels, sl.Fetched)
}

func (c *levelCache) set(levels []guance.Level, fetched time.Time) {
	m := make(map[string]guance.Level, len(levels))
	for _, l := range levels {
		m[l.UUID] = l
	}
	c.mu.Lock()
	c.byUUID, c.fetched = m, fetched
	c.mu.Unlock()
}

func (c *levelCache) get(ref guance.LevelRef) (guance.Level, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.byUUID[string(ref)]
	return l, ok
}

// storeIssue is the record kept for a carded issue, before its first card is added.
func storeIssue(is guance.Issue) store.Issue {
	return store.Issue{
		IssueUUID: is.UUID, CardRevision: 1,
		UpdateAt: is.UpdateAt.Unix(), ScannedUpdateAt: is.UpdateAt.Unix(), StatusType: int(is.StatusType), Level: string(is.Level),
		Name: is.Name, CreateAt: is.CreateAt.Unix(),
	}
}
