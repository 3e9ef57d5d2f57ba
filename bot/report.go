package bot

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// cursorLastPoll is the store cursor holding the unix time of the last successful
// poll, so any replica can report it.
const cursorLastPoll = "status.lastPoll"

// Report is the bridge's health as the status command shows it. Everything in it is
// read from the store or this process, so any replica can answer.
type Report struct {
	Store        string
	LastPoll     time.Time
	PollEvery    time.Duration
	BudgetUsed   int
	BudgetLimit  int
	BudgetWindow time.Duration
	Tracked      int
	Watched      int
	// OldestScan is the longest any watched open issue has waited for a reply scan:
	// the current reply-sync staleness bound.
	OldestScan time.Duration
	// Cycle estimates how long scanning every watched issue once takes.
	Cycle time.Duration
	// ReplyBumps is what the watcher learnt about Guance: "yes" if a new reply bumps
	// the issue's updateAt, "no" if not, "unknown" until it has seen enough.
	ReplyBumps string
	Queues     map[string]int
}

// report gathers the Report.
func (b *Bot) report(ctx context.Context) (Report, error) {
	r := Report{Store: b.state.Kind(), PollEvery: b.pollEvery(), BudgetWindow: b.cfg.BudgetWindow,
		BudgetLimit: b.cfg.RateLimit, Queues: map[string]int{}}
	if b.cfg.Budget != nil {
		st := b.cfg.Budget()
		r.BudgetUsed, r.BudgetLimit = st.Used, st.Limit
	}
	if t, err := b.state.Cursor(ctx, cursorLastPoll); err == nil && t > 0 {
		r.LastPoll = time.Unix(t, 0)
	}
	recs, err := b.state.ListSummaries(ctx)
	if err != nil {
		return r, fmt.Errorf("list issue summaries: %w", err)
	}
	now := b.now()
	r.Tracked = len(recs)
	open := 0
	for _, rec := range recs {
		if !b.watchedIssue(rec, now) {
			continue
		}
		r.Watched++
		if statusDone(rec.StatusType) {
			continue
		}
		open++
		since := rec.RepliesScannedAt
		if since.IsZero() {
			since = rec.FirstSent
		}
		r.OldestScan = max(r.OldestScan, now.Sub(since))
	}
	r.Cycle = b.scanCycle(r.Watched, open)
	r.ReplyBumps = "unknown"
	if bumps, known := b.watch.replyBumps(); known && bumps {
		r.ReplyBumps = "yes"
	} else if known {
		r.ReplyBumps = "no"
	}
	for _, q := range []string{queueCards, queueReplies, queueThread, queuePatches, queueStatus} {
		if n, err := b.state.CountJobs(ctx, q); err == nil {
			r.Queues[q] = n
		}
	}
	return r, nil
}

// Text renders the report in both languages, one line per fact.
func (r Report) Text(now time.Time) string {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "从未 / never"
		}
		return roundDur(now.Sub(t)).String() + " 前 / ago"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "issuebot 状态 / status\n")
	fmt.Fprintf(&b, "上次轮询 / last poll: %s（每 / every %s）\n", ago(r.LastPoll), roundDur(r.PollEvery))
	scope := ""
	if r.Store == "redis" {
		scope = "，本副本 / this replica" // the limit is shared by the replicas through Redis
	}
	fmt.Fprintf(&b, "Guance 配额 / budget: %d / %d 每 / per %s%s\n", r.BudgetUsed, r.BudgetLimit, roundDur(r.BudgetWindow), scope)
	fmt.Fprintf(&b, "存储 / store: %s\n", r.Store)
	fmt.Fprintf(&b, "卡片 / cards: 跟踪 tracked %d，监视 watched %d\n", r.Tracked, r.Watched)
	fmt.Fprintf(&b, "回复同步 / reply sync: 最久未扫 oldest unscanned %s，轮转一周约 full round ≈ %s（回复更新 updateAt / replies bump updateAt: %s）\n",
		roundDur(r.OldestScan), roundDur(r.Cycle), r.ReplyBumps)
	fmt.Fprintf(&b, "队列 / queues: cards %d · replies %d · thread %d · patches %d · status %d",
		r.Queues[queueCards], r.Queues[queueReplies], r.Queues[queueThread], r.Queues[queuePatches], r.Queues[queueStatus])
	return b.String()
}

// roundDur rounds a duration for people: seconds below an hour, minutes above.
func roundDur(d time.Duration) time.Duration {
	if d >= time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}
