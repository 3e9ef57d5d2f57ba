package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/bot/plaintext"
	"issuebot/guance"
	"issuebot/store"
)

// Status changes from the chat: card buttons (card.action.trigger) and the text
// commands resolve / pending / reopen in a card's thread. Both send Guance exactly
// {"statusType": N} (never extend, which could wipe owners and members).

// queueStatus is the store queue of status changes that could not be made at once (a
// text command, or a click while Guance was busy).
const queueStatus = "status"

// clickBudget is how long a click may wait for Guance: Feishu wants the callback's
// answer within 3 s.
const clickBudget = 2200 * time.Millisecond

// answerDeadline is when Feishu stops waiting for a callback's answer.
const answerDeadline = 3 * time.Second

// statusJob is a status change to make in Guance.
type statusJob struct {
	IssueUUID string            `json:"issue_uuid"`
	Target    guance.StatusType `json:"target"`
	Action    string            `json:"action"`
	// Expect is the status the person saw; the change is dropped if the issue has
	// moved on since (0: no expectation, a text command).
	Expect guance.StatusType `json:"expect,omitempty"`
	Who    string            `json:"who"`
	// WhoOpenID names the person when Who is not known yet (a text command).
	WhoOpenID string `json:"who_open_id,omitempty"`
	// MessageID is the chat message of a text command, which gets a reaction, and
	// ChatID its chat.
	MessageID string    `json:"message_id,omitempty"`
	ChatID    string    `json:"chat_id,omitempty"`
	At        time.Time `json:"at"`
}

// HandleCardAction receives card.action.trigger: a Resolve, Pending or Reopen click. It
// changes the status in Guance and answers with a toast and the re-rendered card. A
// click on a card that showed another status than the issue has now — in the record,
// or in Guance, which is asked first because the record can lag the console by a
// sweep — changes nothing and answers with the current card. When Guance cannot be
// reached in time the change is queued, and the card is patched once it is made.
func (b *Bot) HandleCardAction(ctx context.Context, a feishu.CardAction) (feishu.CardResponse, error) {
	b.metrics.observeEvent("card_action", b.now(), a.EventTime)
	start := b.now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clickBudget+500*time.Millisecond)
	defer cancel()
	log := b.logger.With("message_id", a.MessageID, "chat_id", a.ChatID)
	act, err := cards.ParseAction(a.Value)
	if err != nil {
		log.Warn("unknown card action", "err", err)
		return toastOnly("error", "无法识别的操作。", "Unknown action."), nil
	}
	log = log.With("issue_uuid", act.IssueUUID, "action", act.Action)
	if act.Action == cards.ActionCard {
		return b.cardFromDigest(ctx, a, act)
	}
	rec, err := b.state.GetIssue(ctx, act.IssueUUID)
	if errors.Is(err, store.ErrNotFound) {
		// The card may be out but not recorded yet (its sender was killed between the
		// two, say): the change then waits for the record. The queue is read before the
		// record again, since the sender records the card and then drops its job.
		queued, qerr := b.cardQueued(ctx, act.IssueUUID, "")
		switch {
		case qerr != nil:
			log.Error("card action: read the card queue", "err", qerr)
		case queued:
			job := statusJob{IssueUUID: act.IssueUUID, Target: act.Status(), Action: act.Action, Expect: act.Shown,
				Who: b.operatorName(ctx, a.OperatorOpenID), At: b.now()}
			if err := b.queueStatusJob(ctx, "click:"+a.EventID+":"+a.Token, job); err != nil {
				log.Error("queue a status change", "err", err)
				return toastOnly("error", "机器人暂时无法处理，请稍后再试。", "The bot cannot handle this right now; try again shortly."), nil
			}
			log.Info("status change queued until the card is recorded")
			return toastOnly("info", "修改已排队，完成后卡片会更新。", "The change is queued; the card will update when it is done."), nil
		}
		rec, err = b.state.GetIssue(ctx, act.IssueUUID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return toastOnly("error", "找不到这个 Issue 的记录。", "This issue is not known to the bot."), nil
	}
	if err != nil {
		log.Error("card action: read issue record", "err", err)
		return toastOnly("error", "机器人暂时无法处理，请稍后再试。", "The bot cannot handle this right now; try again shortly."), nil
	}
	if rec.Gone {
		return b.answerFor(ctx, rec, a.MessageID, "warning", "这个 Issue 已在 Guance 中删除。", "This issue was deleted in Guance.")
	}
	if b.staleClick(act, rec) {
		zh, en := cards.StatusText(guance.StatusType(rec.StatusType))
		log.Info("stale card click answered with the current state", "clicked_rev", act.Revision, "revision", rec.CardRevision)
		return b.answerFor(ctx, rec, a.MessageID, "warning", "卡片已过期：当前状态为「"+zh+"」，未做修改。",
			"The card was out of date: the issue is "+en+" now; nothing was changed.")
	}
	target := act.Status()
	if int(target) == rec.StatusType {
		zh, en := cards.StatusText(target)
		return b.answerFor(ctx, rec, a.MessageID, "info", "已经是「"+zh+"」。", "Already "+en+".")
	}
	who := b.operatorName(ctx, a.OperatorOpenID)
	job := statusJob{
		IssueUUID: rec.IssueUUID, Target: target, Action: act.Action, Expect: guance.StatusType(rec.StatusType),
		Who: who, At: b.now(),
	}
	gctx, gcancel := context.WithTimeout(guance.WithPriority(ctx, guance.PriorityHigh), clickBudget-b.now().Sub(start))
	defer gcancel()
	asked := b.now()
	cur, err := b.guance.GetIssue(gctx, rec.IssueUUID)
	if err == nil && int(cur.StatusType) != rec.StatusType {
		// Changed in Guance since the bot last looked: show that instead of undoing it.
		if oerr := b.observe(ctx, *cur, asked); oerr != nil {
			log.Warn("apply the issue as Guance has it", "err", oerr)
		}
		if fresh, rerr := b.state.GetIssue(ctx, rec.IssueUUID); rerr == nil {
			rec = fresh
		}
		zh, en := cards.StatusText(cur.StatusType)
		log.Info("card click on a status changed in Guance answered with the current state", "status", cur.StatusType.String())
		return b.answerFor(ctx, rec, a.MessageID, "warning", "状态已在 Guance 中改为「"+zh+"」，未做修改。",
			"The issue was changed to "+en+" in Guance; nothing was changed.")
	}
	var rec2 store.Issue
	if err == nil {
		answered := ""
		if _, ok := rec.CardOf(a.MessageID); ok {
			answered = a.MessageID
		}
		rec2, err = b.applyStatus(gctx, job, answered)
	}
	switch {
	case err == nil:
		b.metrics.statusChanges.WithLabelValues("button").Inc()
		zh, en := cards.StatusText(target)
		log.Info("status changed from the card", "status", target.String())
		if late := b.now().Sub(start); late > answerDeadline {
			// Feishu may have dropped an answer this late: patch the card too.
			log.Warn("a click's answer is late; the card is patched as well", "took", late)
			b.unanswered(ctx, rec2, a.MessageID)
		}
		return b.answerFor(ctx, rec2, a.MessageID, "success", "已将状态改为「"+zh+"」。", "Status changed to "+en+".")
	case errors.Is(err, guance.ErrNotFound):
		if gerr := b.markGone(ctx, rec.IssueUUID); gerr != nil {
			log.Warn("mark a deleted issue", "err", gerr)
		}
		return toastOnly("error", "Guance 中找不到这个 Issue（可能已删除）。", "Guance no longer has this issue (deleted?)."), nil
	case refused(err):
		log.Error("Guance refused a status change", "err", err)
		return toastOnly("error", "Guance 拒绝了修改："+guanceReason(err), "Guance refused the change: "+guanceReason(err)), nil
	}
	// Guance is busy or slow: keep the change and make it as soon as it can be made.
	log.Warn("status change queued: Guance did not answer in time", "err", err)
	if qerr := b.queueStatusJob(ctx, "click:"+a.EventID+":"+a.Token, job); qerr != nil {
		log.Error("queue a status change", "err", qerr)
		return toastOnly("error", "Guance 暂时不可用，请稍后再试。", "Guance is unavailable; please try again shortly."), nil
	}
	return toastOnly("info", "Guance 繁忙，修改已排队，完成后卡片会更新。",
		"Guance is busy: the change is queued and the card will update when it is done."), nil
}

// staleClick reports whether a click was made on a card that showed another status
// than the issue has now. Buttons of older cards carry only the revision; then any
// other revision is stale.
func (b *Bot) staleClick(act cards.Action, rec store.Issue) bool {
	if act.Shown != 0 {
		return int(act.Shown) != rec.StatusType
	}
	return act.Revision != rec.CardRevision
}

// answerFor is a callback answer with a toast and the record's card as the clicked
// message shows it.
func (b *Bot) answerFor(ctx context.Context, rec store.Issue, messageID, typ, zh, en string) (feishu.CardResponse, error) {
	resp := toastOnly(typ, zh, en)
	c, _ := rec.CardOf(messageID)
	card, err := b.recordCard(ctx, rec, c)
	if err != nil {
		b.logger.Error("render card for a callback answer", "issue_uuid", rec.IssueUUID, "err", err)
		return resp, nil
	}
	resp.Card = card
	return resp, nil
}

func toastOnly(typ, zh, en string) feishu.CardResponse {
	return feishu.CardResponse{Toast: &feishu.Toast{Type: typ, ZhCN: zh, EnUS: en}}
}

// operatorName is the clicking person's name, looked up briefly; the open_id if the
// contact API does not answer in time.
func (b *Bot) operatorName(ctx context.Context, openID string) string {
	nctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	if n, err := b.feishu.UserName(nctx, openID); err == nil && n != "" {
		return n
	}
	if openID == "" {
		return "?"
	}
	return openID
}

// refused reports whether Guance answered a write with a refusal a retry will not cure.
func refused(err error) bool {
	var ge *guance.Error
	return errors.As(err, &ge) && !ge.Temporary() && !errors.Is(err, guance.ErrBadKey)
}

// guanceReason is the part of a Guance error a person can act on.
func guanceReason(err error) string {
	var ge *guance.Error
	if errors.As(err, &ge) {
		if ge.Message != "" {
			return plaintext.Truncate(ge.Message, 100, "…")
		}
		if ge.Code != "" {
			return ge.Code
		}
		return fmt.Sprintf("HTTP %d", ge.StatusCode)
	}
	return "?"
}

// applyStatus makes a status change in Guance and records it: the cards' next
// revision shows the new status and who changed it. answered names the card message
// the caller shows itself (a callback answer), which the record then says shows it;
// the issue's other cards are patched.
func (b *Bot) applyStatus(ctx context.Context, job statusJob, answered string) (store.Issue, error) {
	is, err := b.guance.SetStatus(ctx, job.IssueUUID, job.Target)
	if err != nil {
		return store.Issue{}, err
	}
	if is != nil {
		b.learnKey(ctx, is.Updator)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	rec, _, err := b.updateIssue(wctx, job.IssueUUID, func(r *store.Issue) error {
		switch {
		case is != nil && is.UUID == job.IssueUUID && !is.UpdateAt.IsZero():
			// A record already newer than Guance's answer (another click's, say) stays.
			if up := is.UpdateAt.Unix(); up >= r.UpdateAt {
				r.UpdateAt = up
				r.Level, r.Name = string(is.Level), is.Name
				r.StatusType = int(is.StatusType)
				r.Snapshot = b.snapshot(*is)
			}
		default:
			// Guance answered without the issue's new updateAt. Local time stands in, so
			// that a list row read before the change cannot undo it on the card.
			r.StatusType = int(job.Target)
			r.UpdateAt = max(r.UpdateAt, b.now().Unix())
		}
		r.ChangedBy, r.ChangedAction, r.ChangedAt = job.Who, job.Action, job.At
		r.StatusSetAt = b.now()
		r.CardRevision++
		for i := range r.Cards {
			if answered != "" && r.Cards[i].MessageID == answered {
				r.Cards[i].PatchedRevision = r.CardRevision
			}
		}
		return nil
	})
	if err != nil {
		return store.Issue{}, fmt.Errorf("record the status change: %w", err)
	}
	for _, c := range rec.Cards {
		if c.PatchedRevision < rec.CardRevision {
			if err := b.queuePatch(wctx, job.IssueUUID); err != nil {
				return rec, err
			}
			break
		}
	}
	return rec, nil
}

// queueStatusJob stores a status change to be made by the status worker.
func (b *Bot) queueStatusJob(ctx context.Context, id string, job statusJob) error {
	if err := b.status.Enqueue(ctx, id, job, b.now()); err != nil {
		return fmt.Errorf("queue status change of issue %s: %w", job.IssueUUID, err)
	}
	return nil
}

// unanswered marks the clicked card's revision as not shown (the answer that carried
// it may have come too late) and queues its patch.
func (b *Bot) unanswered(ctx context.Context, rec store.Issue, messageID string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, _, err := b.updateIssue(wctx, rec.IssueUUID, func(r *store.Issue) error {
		for i := range r.Cards {
			if c := &r.Cards[i]; c.MessageID == messageID && c.PatchedRevision == rec.CardRevision {
				c.PatchedRevision = rec.CardRevision - 1
				return nil
			}
		}
		return errUnchanged
	}); err != nil {
		b.logger.Warn("mark a late click answer", "issue_uuid", rec.IssueUUID, "err", err)
		return
	}
	if err := b.queuePatch(wctx, rec.IssueUUID); err != nil {
		b.logger.Warn("queue the patch after a late click answer", "issue_uuid", rec.IssueUUID, "err", err)
	}
}

// statusWork makes one queued status change, unless the issue moved on since it was
// asked for, and reacts to the text command that asked for it.
func (b *Bot) statusWork(ctx context.Context, j *jobs.Job[statusJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	p := j.Payload
	log := b.logger.With("issue_uuid", p.IssueUUID, "action", p.Action)
	rec, err := b.state.GetIssue(wctx, p.IssueUUID)
	if errors.Is(err, store.ErrNotFound) {
		if queued, qerr := b.cardQueued(wctx, p.IssueUUID, ""); qerr != nil {
			return qerr
		} else if queued {
			return jobs.Later(max(b.cfg.RetryBase, 200*time.Millisecond), errors.New("waiting for the issue's card to be recorded"))
		}
		// The queue is read before the record again: the card may have been recorded
		// between the two reads.
		rec, err = b.state.GetIssue(wctx, p.IssueUUID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil // not carded (any more): nothing to change from the chat
	}
	if err != nil {
		return fmt.Errorf("read issue record: %w", err)
	}
	if p.Expect != 0 && rec.StatusType != int(p.Expect) && rec.StatusType != int(p.Target) {
		log.Info("queued status change dropped: the issue changed meanwhile", "status", rec.StatusType)
		return nil
	}
	if p.Expect != 0 {
		// The record can lag the console by a sweep: ask Guance before changing what
		// the person saw, so a change made there meanwhile is not undone.
		asked := b.now()
		cur, err := b.guance.GetIssue(leaderCall(ctx, wctx), p.IssueUUID)
		switch {
		case stoppedWaiting(ctx, err):
			return errAbandoned
		case errors.Is(err, guance.ErrNotFound):
			return b.markGone(wctx, p.IssueUUID)
		case err != nil:
			return fmt.Errorf("read the issue before a queued status change: %w", err)
		case cur.StatusType != p.Expect && cur.StatusType != p.Target:
			log.Info("queued status change dropped: the issue changed in Guance meanwhile", "status", cur.StatusType.String())
			return b.observe(wctx, *cur, asked)
		}
	}
	if p.Who == "" {
		p.Who = b.operatorName(wctx, p.WhoOpenID)
	}
	_, err = b.applyStatus(leaderCall(ctx, wctx), p, "")
	switch {
	case stoppedWaiting(ctx, err):
		return errAbandoned
	case err == nil:
		b.metrics.statusChanges.WithLabelValues("queued").Inc()
		log.Info("queued status change made", "status", p.Target.String())
		if p.MessageID != "" {
			if err := b.feishu.AddReaction(wctx, p.MessageID, "DONE"); err != nil {
				log.Warn("react to a status command", "message_id", p.MessageID, "err", err)
			}
		}
	case errors.Is(err, guance.ErrNotFound):
		if err := b.markGone(wctx, p.IssueUUID); err != nil {
			return err
		}
		if p.MessageID != "" {
			b.notify(wctx, p.MessageID, p.ChatID, noticeNoIssueStatus)
		}
	case refused(err):
		log.Error("Guance refused a status change", "err", err)
		if p.MessageID != "" {
			b.notify(wctx, p.MessageID, p.ChatID, noticeStatusRefused)
		}
	default:
		return err
	}
	return nil
}
