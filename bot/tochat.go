package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/bot/plaintext"
	"issuebot/guance"
	"issuebot/store"
)

// queueThread is the store queue of Guance replies on their way into card threads; a
// job's id is the reply uuid, so a reply is queued once however often it is scanned.
const queueThread = "thread"

// threadTextRunes bounds a reply posted into a thread; the rest is in Guance.
const threadTextRunes = 4000

// threadGiveUpAfter is how old a Guance reply may get while Feishu refuses its post for
// good (the bot was taken out of the chat, say) before it is given up, with an error
// log and a metric: long enough for someone to put the bot back. Until then it is
// tried every ten minutes and the issue's later replies wait behind it, in order.
// Failures a retry can cure (a Feishu outage) never give a post up.
const threadGiveUpAfter = 8 * time.Hour

// threadJob is a human Guance reply to post into its issue's card thread.
type threadJob struct {
	IssueUUID string `json:"issue_uuid"`
	ReplyUUID string `json:"reply_uuid"`
	Author    string `json:"author"`
	CreateAt  int64  `json:"create_at"`
	Text      string `json:"text"`
	// Creator is the author's account id (held replies are judged by it).
	Creator string `json:"creator,omitempty"`
	// Seq orders replies of one issue written in the same second: Guance's order.
	Seq int64 `json:"seq"`
	// Posted lists the chats whose card threads have the post already.
	Posted []string `json:"posted,omitempty"`
	// FromChat, for a reply written in one chat's thread, is that chat: the post goes to
	// the issue's other chats, and FromName names the group it came from.
	FromChat string `json:"from_chat,omitempty"`
	FromName string `json:"from_name,omitempty"`
}

// doneKey is the claim that the post was made everywhere (and a Guance reply counted).
func (p threadJob) doneKey() string {
	if p.FromChat != "" {
		return syncedKey("mirror:" + p.ReplyUUID)
	}
	return syncedKey("guance:" + p.ReplyUUID)
}

// scanReplies reads an issue's replies newest first, down to where earlier scans read
// them all (the issue's LastReplyAt watermark; replies of that second, and up to
// scanSlack below it while pages there hold unseen ones, are checked one by one, in
// case one became visible late), and queues the new human ones
// for its thread. An issue's first scan reads down to the issue's creation: every
// reply since is news to the chat, however late the card went out. A scan that has not
// got there after scanMaxPages goes on at the next step (ScanResume) and only then
// moves the watermark; meanwhile the issue's thread posts wait, so they go out in
// order. The bot's own replies are marked seen as it writes them, so "seen" alone
// cannot be where a scan stops. Change entries written by someone else than the bot
// flag the issue to be read again (its card may be out of date). The seen marks and
// the watermark are written after the jobs, so a crash repeats, never loses.
func (b *Bot) scanReplies(ctx context.Context, rec store.Issue) error {
	uuid := rec.IssueUUID
	first := rec.LastReplyAt == 0
	floor := rec.LastReplyAt
	if first {
		floor = rec.CreateAt
		if floor == 0 { // a record of an older version
			floor = rec.FirstSent().Add(-firstScanReach).Unix()
		}
	}
	bottom := floor - int64(scanSlack/time.Second)
	start, newest := 1, int64(0)
	if rec.ScanResume > 0 {
		start, newest = rec.ScanResume, rec.ScanTop
	}
	var fresh []guance.Reply
	complete, page := false, start
	for ; page < start+scanMaxPages && !complete; page++ {
		rows, _, err := b.guance.ListReplies(ctx, uuid, guance.ReplyListOptions{
			Ordering: "-createAt", PageIndex: page, PageSize: scanPageSize,
		})
		if errors.Is(err, guance.ErrNotFound) {
			return b.markGone(ctx, uuid)
		}
		if err != nil {
			b.noteFailure(uuid, err)
			return fmt.Errorf("scan replies of issue %s: %w", uuid, err)
		}
		b.metrics.replyScans.Inc()
		// Done at the list's end, below the slack, or at a page that reached the
		// watermark with nothing new at or under it.
		complete = len(rows) < scanPageSize
		reached, late := false, false
		for _, r := range rows {
			at := r.CreateAt.Unix()
			if r.UUID == "" {
				continue
			}
			if at < bottom {
				complete = true // read by an earlier scan, or from before the issue
				continue
			}
			newest = max(newest, at)
			seen, err := b.state.ReplySeen(ctx, uuid, r.UUID)
			if err != nil {
				return fmt.Errorf("check reply %s seen: %w", r.UUID, err)
			}
			if !seen {
				fresh = append(fresh, r)
			}
			if !first && at <= floor {
				reached, late = true, late || !seen
			}
		}
		complete = complete || (reached && !late)
	}
	b.noteSuccess(uuid)
	slices.Reverse(fresh) // oldest first: the thread shows them in order
	if !complete && rec.ScanResume == 0 && len(fresh) > 0 {
		// Hold the issue's posts before queuing any: older replies are still to come.
		// (A crash before the resume page is written starts the scan over; the seen
		// marks keep it from queuing twice.)
		if _, _, err := b.updateIssue(ctx, uuid, func(r *store.Issue) error {
			r.ScanResume = start
			return nil
		}); err != nil {
			return fmt.Errorf("mark the reply scan of issue %s in progress: %w", uuid, err)
		}
	}

	now := b.now()
	refresh, changes := false, 0
	var done []string
	for i, r := range fresh {
		done = append(done, r.UUID)
		if r.Type == "reply" {
			b.watch.learnBumps(uuid, r.CreateAt.Unix())
		}
		if r.Type == "change" && !b.byBotKey(r.Creator) {
			// Someone changed the issue since the last scan (on a first scan: since it
			// was created, which is itself one change entry). The open list shows most
			// changes, but not those of issues outside it (a resolved issue reopened)
			// nor one in the same second as the updateAt known: read it again.
			changes++
			covered := b.pollCovers(time.Unix(rec.CreateAt, 0), now)
			if !covered && (!first || changes > 1 || r.CreateAt.Unix() > rec.CreateAt) {
				// (An issue inside the new-issue poll's window needs no re-read: every
				// poll shows its status, level and title.)
				refresh = true
			}
		}
		verdict, err := b.judgeReply(ctx, r)
		if err != nil {
			return err
		}
		queue := b.thread
		switch verdict {
		case replySkip:
			continue
		case replyHeld:
			queue = b.held
		}
		job := threadJob{
			IssueUUID: uuid, ReplyUUID: r.UUID, Author: replyAuthor(r), Creator: r.Creator,
			CreateAt: r.CreateAt.Unix(), Text: replyText(r), Seq: now.UnixNano() + int64(i),
		}
		if err := queue.Enqueue(ctx, r.UUID, job, now); err != nil {
			return fmt.Errorf("queue reply %s for the thread: %w", r.UUID, err)
		}
	}
	if len(done) > 0 {
		if err := b.state.MarkRepliesSeen(ctx, uuid, done...); err != nil {
			return fmt.Errorf("mark replies of issue %s seen: %w", uuid, err)
		}
	}
	_, _, err := b.updateIssue(ctx, uuid, func(r *store.Issue) error {
		r.RepliesScannedAt = now
		if !r.HintedAt.After(rec.HintedAt) {
			r.HintedAt = time.Time{} // served (a hook that came during the scan stays)
		}
		r.Refresh = r.Refresh || refresh
		if !complete {
			r.ScanResume, r.ScanTop = page, newest
			return nil
		}
		if start == 1 {
			// A scan of several steps may have missed a reply newer than its first page:
			// the issue stays "moved" and page 1 is read once more.
			r.ScannedUpdateAt = max(r.ScannedUpdateAt, rec.UpdateAt)
		}
		r.LastReplyAt = max(r.LastReplyAt, newest, floor)
		r.ScanResume, r.ScanTop = 0, 0
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// firstScanReach is, for records of an older version that did not keep the issue's
// createAt, how long before its card a reply may have been written and still be posted
// by the issue's first scan.
const firstScanReach = 10 * time.Minute

// queueHeld keeps replies written with an API key while the bot does not know its own
// key's id yet: once it does, they are posted (another integration's) or dropped (its
// own). A job's id is the reply uuid.
const queueHeld = "held"

// replyVerdict is what becomes of a reply found by a scan.
type replyVerdict int

const (
	replySkip replyVerdict = iota // not for the chat
	replyPost                     // a reply for the thread
	replyHeld                     // written with an API key that may be the bot's
)

// judgeReply decides whether a reply goes to the chat: a "reply" entry, not deleted,
// not one of the uuids the bot created and not written with the bot's API key. Unknown
// types (monitor-appended events) and change entries are not posted.
func (b *Bot) judgeReply(ctx context.Context, r guance.Reply) (replyVerdict, error) {
	if r.Type != "reply" || !r.DeleteAt.IsZero() {
		return replySkip, nil
	}
	own, err := b.state.IsOwnReply(ctx, r.UUID)
	if err != nil {
		return replySkip, fmt.Errorf("check reply %s: %w", r.UUID, err)
	}
	switch {
	case own:
		b.learnKey(ctx, r.Creator)
		return replySkip, nil
	case !strings.HasPrefix(r.Creator, "wsak_"):
		return replyPost, nil
	case b.keyID.Load() == nil:
		return replyHeld, nil
	case b.byBotKey(r.Creator):
		return replySkip, nil
	}
	return replyPost, nil
}

// heldMaxWait is how long (at Guance's real one-minute budget window) a reply written
// with an API key is held while the bot does not know its own key's id.
const heldMaxWait = 15 * time.Minute

// errHeld explains a held reply's wait.
var errHeld = errors.New("written with an API key while the bot's own key is unknown")

// settleHeld settles one held reply once the bot knows its key's id (learnt by this
// process or, through the store, another): another key's reply goes to the thread, the
// bot's own is dropped. Without the id, a held reply is still not the bot's own once it
// is older than heldMaxWait and no reply of the bot's is in flight (a reply the bot
// wrote is recorded as its own before its job goes); until then it is looked at again
// every few seconds.
func (b *Bot) settleHeld(ctx context.Context, j *jobs.Job[threadJob]) error {
	if b.keyID.Load() == nil {
		b.loadKey(ctx) // another replica may have learnt it
	}
	p := j.Payload
	recheck := max(b.cfg.BudgetWindow/30, 10*time.Millisecond)
	if b.keyID.Load() == nil {
		if b.now().Sub(time.Unix(p.CreateAt, 0)) < heldMaxWait/time.Minute*b.cfg.BudgetWindow {
			return jobs.Later(recheck, errHeld)
		}
		if n, err := b.state.CountJobs(ctx, queueReplies); err != nil || n > 0 {
			return jobs.Later(recheck, errors.Join(errHeld, errors.New("a reply of the bot's is in flight"), err))
		}
		// A reply the bot wrote is recorded as its own even when the answer that would
		// have taught it its key's id was lost: never post that one.
		own, err := b.state.IsOwnReply(ctx, j.ID)
		if err != nil {
			return fmt.Errorf("check held reply %s: %w", j.ID, err)
		}
		if own {
			b.learnKey(ctx, p.Creator)
			return nil
		}
	} else if b.byBotKey(p.Creator) {
		return nil
	}
	return b.thread.Enqueue(ctx, j.ID, p, b.now())
}

// replyAuthor names a reply's author.
func replyAuthor(r guance.Reply) string {
	if r.CreatorInfo != nil {
		if n := strings.TrimSpace(r.CreatorInfo.Name); n != "" {
			return n
		}
		if n := strings.TrimSpace(r.CreatorInfo.Username); n != "" {
			return n
		}
	}
	if r.Creator != "" {
		return r.Creator
	}
	return "?"
}

// replyText is a reply's text for the chat: extend.text when set, else the HTML
// content made plain, cut to threadTextRunes.
func replyText(r guance.Reply) string {
	t := strings.TrimSpace(r.Extend.Text)
	if t == "" {
		t = plaintext.FromHTML(r.Content)
	} else {
		t = plaintext.Clean(t, false)
	}
	return plaintext.Truncate(t, threadTextRunes, "\n…（完整内容见 Guance / see Guance for the rest）")
}

// threadPost is the text of a reply in the chat: where from, who, when, then the reply.
func (b *Bot) threadPost(p threadJob) string {
	at := time.Unix(p.CreateAt, 0).In(b.cfg.Location).Format(cards.TimeLayout)
	text := p.Text
	if text == "" {
		text = "（空回复 / empty reply）"
	}
	from := "[Guance]"
	if p.FromChat != "" {
		from = "[飞书 · " + cmp.Or(p.FromName, p.FromChat) + "]"
	}
	return defuseAt(from + " " + p.Author + " · " + at + "\n" + text)
}

// atTag finds Feishu's mention syntax in a text message (<at user_id="all"></at>).
var atTag = regexp.MustCompile(`(?i)<(/?\s*at[\s>])`)

// defuseAt keeps text written in Guance from mentioning people in Feishu: a text
// message's <at …> tags would notify them (or everyone), so a zero-width space is put
// after each such "<".
func defuseAt(s string) string {
	return atTag.ReplaceAllString(s, "<\u200b$1")
}

// threadUUID is the Feishu idempotency key of a reply's post into a chat.
func threadUUID(replyUUID, chatID string) string {
	sum := sha256.Sum256([]byte(replyUUID + "\x00" + chatID))
	return "ibt-" + hex.EncodeToString(sum[:])[:40]
}

// postToThread posts one reply into the thread of every card of its issue (creating
// a thread on the first one), records the threads and counts a Guance reply on the
// cards; the engine then removes the job. The replies of one issue go in the order they
// were written (the issue is the job's key): one that failed holds back the later ones
// of its issue, and no other issue's. Each chat's post carries a deterministic uuid,
// and the chats done are kept in the job, so a retry after a lost answer or a crash
// posts nothing twice.
func (b *Bot) postToThread(ctx context.Context, j *jobs.Job[threadJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	p := &j.Payload
	// Posted and counted already (queued again after a crash lost its seen mark, say,
	// perhaps after Feishu's one-hour uuid window): not again.
	if done, err := b.state.Claimed(wctx, p.doneKey()); err != nil {
		return fmt.Errorf("check reply %s posted: %w", p.ReplyUUID, err)
	} else if done {
		return nil
	}
	rec, err := b.state.GetIssue(wctx, p.IssueUUID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the issue's record is gone: nowhere to post
	}
	if err != nil {
		return fmt.Errorf("read issue record: %w", err)
	}
	if rec.ScanResume > 0 && !rec.Gone {
		// A scan is still reading older replies of the issue: they go first.
		return jobs.Later(b.cfg.BudgetWindow/10, errors.New("a scan is reading older replies of the issue"))
	}
	var errs []error
	live := 0 // cards a post goes to (a chat that has the issue only in a storm digest gets none)
	for _, c := range rec.Cards {
		if c.MessageID != "" && c.ChatID != p.FromChat {
			live++
		}
		if c.ChatID == p.FromChat || slices.Contains(p.Posted, c.ChatID) || c.MessageID == "" {
			continue
		}
		if left, err := b.chatLeft(wctx, c.ChatID); err != nil || left {
			errs = append(errs, err)
			continue
		}
		if err := b.postInto(ctx, wctx, j, rec, c, live > 1 || len(rec.Cards) > 1); err != nil {
			if errors.Is(err, errAbandoned) {
				return err
			}
			errs = append(errs, err)
			continue
		}
		p.Posted = append(p.Posted, c.ChatID)
		if err := j.Save(wctx); err != nil {
			return err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if p.FromChat != "" {
		if _, err := b.state.Claim(wctx, p.doneKey(), store.Retention); err != nil {
			return fmt.Errorf("record reply %s mirrored: %w", p.ReplyUUID, err)
		}
		return nil
	}
	if live == 0 {
		return nil // in digests only: the reply stays in Guance, not counted as synced
	}
	if err := b.countSynced(wctx, rec.IssueUUID, "guance:"+p.ReplyUUID); err != nil {
		return err
	}
	b.metrics.repliesToChat.Inc()
	b.metrics.replyStaleness.Observe(max(b.now().Sub(time.Unix(p.CreateAt, 0)), 0).Seconds())
	return nil
}

// postInto posts a reply into one card's thread and records the thread. A chat that
// refuses the post for good is given up once the reply is threadGiveUpAfter old — at
// once when the issue has cards in other chats too (shared), which must not wait
// behind it.
func (b *Bot) postInto(ctx, wctx context.Context, j *jobs.Job[threadJob], rec store.Issue, c store.Card, shared bool) error {
	p := j.Payload
	if !b.pacer.wait(ctx, c.ChatID) {
		return errAbandoned
	}
	sent, err := b.feishu.ReplyText(wctx, c.MessageID, b.threadPost(p), true, threadUUID(p.ReplyUUID, c.ChatID))
	if fe := (*feishu.Error)(nil); errors.As(err, &fe) && fe.MessageGone() {
		// The card was recalled: the reply goes to the chat itself, naming the issue.
		sent, err = b.feishu.SendText(wctx, c.ChatID, "「"+plaintext.Truncate(rec.Name, cards.TitleRunes, "…")+"」\n"+b.threadPost(p),
			threadUUID(p.ReplyUUID, c.ChatID))
	}
	if err != nil && !feishu.Retryable(wctx, err) && (shared || b.now().Sub(time.Unix(p.CreateAt, 0)) >= threadGiveUpAfter) {
		b.metrics.threadDrops.Inc()
		b.logger.Error("a chat refuses a reply's post; given up there", "issue_uuid", p.IssueUUID,
			"reply_uuid", p.ReplyUUID, "chat_id", c.ChatID, "err", err)
		return nil
	}
	if err != nil {
		if j.Attempts+1 == replyNotifyAfter {
			b.logger.Error("a reply cannot be posted to its thread; still retrying", "issue_uuid", p.IssueUUID,
				"reply_uuid", p.ReplyUUID, "chat_id", c.ChatID, "message_id", c.MessageID, "err", err)
		}
		return fmt.Errorf("post reply %s into the thread in chat %s: %w", p.ReplyUUID, c.ChatID, err)
	}
	if b.afterThreadPost != nil {
		if err := b.afterThreadPost(p.ReplyUUID); err != nil {
			return errAbandoned
		}
	}
	if sent.ThreadID != "" && c.ThreadID == "" {
		if err := b.linkThread(wctx, rec.IssueUUID, c.ChatID, sent.ThreadID); err != nil {
			return fmt.Errorf("record thread %s: %w", sent.ThreadID, err)
		}
	}
	b.logger.Info("reply posted to the thread", "issue_uuid", p.IssueUUID, "reply_uuid", p.ReplyUUID,
		"message_id", sent.MessageID, "chat_id", c.ChatID)
	return nil
}

// linkThread records the thread of an issue's card in a chat, if it has none yet.
func (b *Bot) linkThread(ctx context.Context, issueUUID, chatID, threadID string) error {
	_, _, err := b.updateIssue(ctx, issueUUID, func(r *store.Issue) error {
		c := r.Card(chatID)
		if c == nil || c.ThreadID != "" {
			return errUnchanged
		}
		c.ThreadID = threadID
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// syncedKey is the claim that a reply was synced and counted on its card.
func syncedKey(key string) string { return "synced:" + key }

// countSynced adds one synced reply to an issue's card (once per key, so a retried
// job does not count twice) and queues the card's patch.
func (b *Bot) countSynced(ctx context.Context, issueUUID, key string) error {
	first, err := b.state.Claim(ctx, syncedKey(key), store.Retention)
	if err != nil {
		return fmt.Errorf("claim reply count %s: %w", key, err)
	}
	if !first {
		return nil
	}
	_, ok, err := b.updateIssue(ctx, issueUUID, func(r *store.Issue) error {
		r.SyncedReplies++
		r.CardRevision++
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), syncedKey(key))
		return err
	}
	if ok {
		return b.queuePatch(ctx, issueUUID)
	}
	return nil
}
