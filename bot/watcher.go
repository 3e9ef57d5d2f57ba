package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"issuebot/guance"
	"issuebot/store"
)

// Change detection (Guance → chat) within the API budget.
//
// Guance has no change feed, and every reply scan costs one request per issue, so the
// watcher spends a fixed number of requests per budget window — one per step, at a
// pace set by the budget left after new-issue polling and a reserve for people's
// writes — however many issues are carded. Each step does the most useful thing:
//
//  1. read again (issue/get) an issue flagged by an earlier step (it left the open list,
//     or a change entry appeared in its replies);
//  2. scan the replies of an issue whose updateAt moved since its last scan;
//  3. every third step while a sweep is due, read one page of the open-issue list
//     (statusType ≠ 20, ≠ 25, created since the oldest watched issue): status, level
//     and title changes come from there, and issues missing from a complete sweep are
//     flagged for (1);
//  4. otherwise scan the replies of the watched issue that waited longest, an issue
//     with recent chat activity or a young card counting its wait four times, a
//     resolved one half.
//
// A scan reads replies newest first and stops at the newest one an earlier scan read;
// human replies become thread posts (tochat.go), change entries flag the issue for (1). So
// whether or not a new reply bumps the issue's updateAt, every reply arrives: through
// (2) when it does, through (4) — within the round-robin bound that `status`
// reports — when it does not. Resolved issues quiet for Config.QuietAfter are no longer
// watched; chat activity in their thread wakes them.

// Tuning of the watcher.
const (
	// scanPageSize is the reply page a scan reads; more pages only if all are new.
	scanPageSize = 20
	// scanMaxPages bounds one step's scan (200 replies); a scan that has not reached
	// what earlier scans read goes on at the next step.
	scanMaxPages = 10
	// scanSlack is how much older than the replies a scan has read one may appear (it
	// became visible late); a scan reads that far below and checks each one.
	scanSlack = time.Minute
	// sweepPageSize is the open-issue list page.
	sweepPageSize = 100
	// sweepMargin widens the sweep's window before the oldest watched issue.
	sweepMargin = time.Hour
	// reopenHorizon is how long after its card a resolved issue that went quiet is
	// still looked for in the open-issue list, so a reopen in Guance wakes it.
	reopenHorizon = 30 * 24 * time.Hour
	// sweepMaxPages ends a sweep that keeps finding pages (100 000 open issues).
	sweepMaxPages = 1000
)

// watcher is the state of change detection that lives in the leader's memory.
type watcher struct {
	mu        sync.Mutex
	step      int
	sweepPage int             // next page of the running sweep; 0: none running
	sweepFrom time.Time       // the running sweep's window start
	sweepSeen map[string]bool // issues listed by the running sweep
	sweepDone time.Time       // when the last sweep completed
	failed    map[string]failure
	// listed remembers, per issue, when the open list last showed it and with which
	// updateAt; a reply found later tells whether replies bump updateAt.
	listed map[string]listing
	// bumpYes and bumpNo count that evidence.
	bumpYes, bumpNo int
	// lastHint is the latest webhook hint seen on a record: while hooks come, the
	// scheduler polls less often (see hooksActive).
	lastHint time.Time
	// hinted: a hinted issue waits for a scan (as far as this replica knows); passed:
	// the last turn went elsewhere while one waited; hintTurns counts the turns given to
	// hinted issues since the last one given to the rest.
	hinted, passed bool
	hintTurns      int
	hintGen        int // counts hintCame: a step's tookTurn keeps a hint that came during it
	// unlisted holds open issues that a re-read found open although a complete sweep
	// did not list them (another channel, say), with when: they are flagged again only
	// every unlistedRecheck, not after every sweep, which would spend a request per such
	// issue per sweep. missed holds the issues a sweep flagged, so that only a re-read
	// caused by a sweep marks an issue unlisted.
	unlisted map[string]time.Time
	missed   map[string]bool
}

// hintRestEvery: while hints keep coming, one watcher turn in this many goes to the
// rest, so that a steady stream of hooks cannot starve the sweep and the round robin.
const hintRestEvery = 8

// hintCame notes that a hook named an issue at now.
func (w *watcher) hintCame(now time.Time) {
	w.mu.Lock()
	w.hinted = true
	w.hintGen++
	w.lastHint = latest(w.lastHint, now)
	w.mu.Unlock()
}

// hintGeneration is the count of hintCame calls, for tookTurn.
func (w *watcher) hintGeneration() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hintGen
}

// hintWaiting reports whether a hinted issue waits for a scan.
func (w *watcher) hintWaiting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hinted
}

// passHint notes a turn that went elsewhere: it passed a waiting hint over.
func (w *watcher) passHint() {
	w.mu.Lock()
	w.passed = w.hinted
	w.mu.Unlock()
}

// hintPassed reports whether a hinted issue waits and the last turn passed it over: the
// next turn is the hint's.
func (w *watcher) hintPassed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hinted && w.passed
}

// restTurn reports whether the rest has the turn over waiting hints (every
// hintRestEvery-th turn, unless the last turn passed the hints over already), and
// whether the last turn passed them over (then this one is theirs).
func (w *watcher) restTurn() (rest, passed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hintTurns >= hintRestEvery-1 && !w.passed, w.passed
}

// tookTurn records a watcher step's choice: gen is hintGeneration before the step read
// the records, hinted how many hinted issues waited, served whether the step took one
// of them, rest whether it was the rest's turn.
func (w *watcher) tookTurn(gen, hinted int, served, rest bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer func() { w.hinted = w.hinted || w.hintGen != gen }()
	switch {
	case hinted == 0:
		w.hinted, w.passed = false, false
	case served:
		w.hintTurns++
		w.hinted, w.passed = hinted > 1, false
	default:
		w.hinted, w.passed = true, true
		if rest {
			w.hintTurns = 0
		}
	}
}

// listing is one sighting of an issue in the open list.
type listing struct {
	at       time.Time
	updateAt int64
}

// learnBumps takes a reply created at createAt (unix s) on an issue as evidence of
// whether Guance bumps an issue's updateAt on a new reply: it is, if the open list
// showed the issue well after the reply was written.
func (w *watcher) learnBumps(issueUUID string, createAt int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.listed[issueUUID]
	if !ok || l.at.Unix() < createAt+2 {
		return
	}
	if l.updateAt >= createAt {
		w.bumpYes++
	} else {
		w.bumpNo++
	}
}

// replyBumps reports what the evidence says: known is false until it is clear.
func (w *watcher) replyBumps() (bumps, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.bumpYes+w.bumpNo < 3:
		return false, false
	case w.bumpYes >= 2*w.bumpNo:
		return true, true
	case w.bumpNo >= 2*w.bumpYes:
		return false, true
	}
	return false, false
}

// Reserve is how many requests per budget window are kept for people's writes
// (thread replies, buttons): background work never spends them, so a click finds a
// free slot at once. run.go gives it to the Guance limiter.
func Reserve(rateLimit int) int {
	return min(max(2, rateLimit/9), max(rateLimit-1, 0))
}

// sweepEvery is how often a new sweep of the open-issue list may start. While replies
// may bump updateAt the sweep is how they are found, so it runs every half window;
// once it is clear that they do not, it only finds status, level and title changes,
// and runs every two windows so that more of the budget goes to reply scans.
func (b *Bot) sweepEvery() time.Duration {
	every := max(3*b.cfg.PollInterval, b.cfg.BudgetWindow/2)
	if bumps, known := b.watch.replyBumps(); known && !bumps {
		every = max(every, 2*b.cfg.BudgetWindow)
	}
	return every
}

// watchedIssue reports whether the watcher still looks at a record.
func (b *Bot) watchedIssue(r store.Summary, now time.Time) bool {
	if r.Gone || r.Cards == 0 {
		return false
	}
	if !statusDone(r.StatusType) || r.ScanResume > 0 || !r.HintedAt.IsZero() {
		return true // open, or a reply scan to finish
	}
	last := latest(time.Unix(r.UpdateAt, 0), time.Unix(r.LastReplyAt, 0), r.LastActivity, r.ChangedAt, r.LastSent)
	return now.Sub(last) < b.cfg.QuietAfter
}

func statusDone(s int) bool {
	return guance.StatusType(s) == guance.StatusResolved || guance.StatusType(s) == guance.StatusClosed
}

// syncStep makes at most one Guance request of the watcher and reports whether it made
// one (false: no issue needs a look now).
func (b *Bot) syncStep(ctx context.Context) (bool, error) {
	gen := b.watch.hintGeneration()
	recs, err := b.state.ListSummaries(ctx)
	if err != nil {
		return false, fmt.Errorf("list issue summaries: %w", err)
	}
	now := b.now()
	w := &b.watch
	w.mu.Lock()
	w.step++
	step := w.step
	w.mu.Unlock()

	var (
		watched                []*store.Summary
		refresh, hinted, dirty *store.Summary
		bestRR                 *store.Summary
		bestScore              float64
		oldest                 time.Duration
		openFrom               time.Time
		nHinted                int
	)
	minGap := b.turnEvery() // no issue is scanned more often, unless it moved
	for i := range recs {
		r := &recs[i]
		// The open-issue sweep covers every open watched issue, and resolved ones carded
		// within the reopen horizon (a reopen in Guance wakes a quiet one).
		created := time.Unix(r.CreateAt, 0)
		if r.CreateAt == 0 {
			created = r.FirstSent
		}
		open := b.watchedIssue(*r, now) && !statusDone(r.StatusType)
		reopenable := !r.Gone && r.Cards > 0 && statusDone(r.StatusType) && now.Sub(r.LastSent) < reopenHorizon
		if (open || reopenable) && (openFrom.IsZero() || created.Before(openFrom)) {
			openFrom = created
		}
		if !b.watchedIssue(*r, now) {
			continue
		}
		watched = append(watched, r)
		since := r.RepliesScannedAt
		if since.IsZero() {
			since = r.FirstSent
		}
		wait := now.Sub(since)
		if !statusDone(r.StatusType) {
			oldest = max(oldest, wait)
		}
		if b.recentlyFailed(r.IssueUUID, now) {
			continue
		}
		switch {
		case r.Refresh:
			if refresh == nil {
				refresh = r
			}
			continue
		case !r.HintedAt.IsZero():
			w.mu.Lock()
			w.lastHint = latest(w.lastHint, r.HintedAt)
			w.mu.Unlock()
			nHinted++
			if hinted == nil || r.HintedAt.Before(hinted.HintedAt) {
				hinted = r
			}
			continue
		case r.UpdateAt > r.ScannedUpdateAt, r.ScanResume > 0:
			if dirty == nil || r.RepliesScannedAt.Before(dirty.RepliesScannedAt) {
				dirty = r
			}
			continue
		}
		if wait < minGap {
			continue
		}
		score := wait.Seconds() * b.scanWeight(*r, now)
		if bestRR == nil || score > bestScore {
			bestRR, bestScore = r, score
		}
	}
	sweepEvery := b.sweepEvery()
	w.mu.Lock()
	sweepDue := w.sweepPage > 0 || now.Sub(w.sweepDone) >= sweepEvery
	w.mu.Unlock()
	if w.sweepPage == 0 && b.pollCovers(openFrom, now) {
		// Every issue a sweep would read was created inside the new-issue poll's
		// window, which shows their status, level, title and updateAt on every poll.
		sweepDue = false
	}
	b.metrics.watched.Set(float64(len(watched)))
	b.metrics.scanOldest.Set(oldest.Seconds())

	rest, passed := w.restTurn()
	kind := chooseStep(waiting{
		refresh: refresh != nil, hinted: hinted != nil, dirty: dirty != nil,
		sweep:      sweepDue && !openFrom.IsZero() && (step%3 == 0 || bestRR == nil),
		roundRobin: bestRR != nil,
	}, rest, passed)
	w.tookTurn(gen, nHinted, kind == stepHinted, rest)
	switch kind {
	case stepRefresh:
		return b.stepOn(ctx, refresh.IssueUUID, b.refreshIssue)
	case stepHinted:
		return b.stepOn(ctx, hinted.IssueUUID, b.scanReplies)
	case stepDirty:
		return b.stepOn(ctx, dirty.IssueUUID, b.scanReplies)
	case stepSweep:
		return true, b.sweepPage(ctx, openFrom, watched)
	case stepRoundRobin:
		return b.stepOn(ctx, bestRR.IssueUUID, b.scanReplies)
	}
	return false, nil
}

// waiting is what a watcher step could do: re-read an issue, scan a hinted one, scan
// one that changed (or whose scan was cut short), read a page of the open-issue sweep,
// scan the round robin's pick.
type waiting struct {
	refresh, hinted, dirty, sweep, roundRobin bool
}

// stepKind is what a watcher step does.
type stepKind int

const (
	stepNone stepKind = iota
	stepRefresh
	stepHinted
	stepDirty
	stepSweep
	stepRoundRobin
)

// chooseStep picks a watcher step: a re-read, then hinted issues, then the rest (in the
// order of waiting's fields). But hinted issues give way to the rest on its turn (rest,
// see restTurn), and go before a re-read when the last turn passed them over (passed).
func chooseStep(w waiting, rest, passed bool) stepKind {
	switch {
	case w.hinted && passed:
		return stepHinted
	case w.refresh:
		return stepRefresh
	case w.hinted && !rest:
		return stepHinted
	case w.dirty:
		return stepDirty
	case w.sweep:
		return stepSweep
	case w.roundRobin:
		return stepRoundRobin
	case w.hinted:
		return stepHinted
	}
	return stepNone
}

// stepOn reads the record of the issue a step picked from the summaries and runs the
// step on it; a record deleted meanwhile makes no step.
func (b *Bot) stepOn(ctx context.Context, issueUUID string, step func(context.Context, store.Issue) error) (bool, error) {
	rec, err := b.state.GetIssue(ctx, issueUUID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the record of issue %s: %w", issueUUID, err)
	}
	return true, step(ctx, rec)
}

// pollCovers reports whether the issues created since from are all listed by the new-
// issue polls: from is inside the window of a poll made within the last two poll
// cadences.
func (b *Bot) pollCovers(from, now time.Time) bool {
	last := b.lastPoll.Load()
	return !from.IsZero() && last > 0 && now.Sub(time.Unix(0, last)) < 2*b.pollEvery() &&
		!from.Before(time.Unix(b.pollFrom.Load(), 0))
}

// scanWeight is how much faster than others an issue's wait counts.
func (b *Bot) scanWeight(r store.Summary, now time.Time) float64 {
	hot := 30 * b.cfg.BudgetWindow // half an hour at Guance's real budget
	switch {
	case statusDone(r.StatusType):
		return 0.5
	case now.Sub(r.LastActivity) < hot, now.Sub(r.LastSent) < hot, now.Sub(time.Unix(r.LastReplyAt, 0)) < hot:
		return 4
	}
	return 1
}

// failure is an issue whose last Guance request failed, n times in a row.
type failure struct {
	at time.Time
	n  int
}

// failureBackoffMax bounds how long an issue whose requests keep failing is left
// alone: 2^5 budget windows.
const failureBackoffMax = 5

// recentlyFailed reports whether the issue's requests failed too recently to try it
// again: a window after the first failure, doubling with each further one (so a
// broken issue does not take the watcher's budget from the others).
func (b *Bot) recentlyFailed(issueUUID string, now time.Time) bool {
	b.watch.mu.Lock()
	defer b.watch.mu.Unlock()
	f, ok := b.watch.failed[issueUUID]
	return ok && now.Sub(f.at) < b.cfg.BudgetWindow<<min(f.n-1, failureBackoffMax)
}

// noteFailure records a failed request about an issue. Throttling is the budget's
// business, and an outage (5xx, a network failure) Guance's, not the issue's: those are
// tried again at the next step instead of leaving the issue alone for a window.
func (b *Bot) noteFailure(issueUUID string, err error) {
	if err == nil || errors.Is(err, guance.ErrThrottled) || guance.Retryable(err) || errors.Is(err, context.Canceled) {
		return
	}
	b.watch.mu.Lock()
	defer b.watch.mu.Unlock()
	if b.watch.failed == nil {
		b.watch.failed = map[string]failure{}
	}
	now := b.now()
	if len(b.watch.failed) > 1024 {
		for id, f := range b.watch.failed {
			if now.Sub(f.at) >= b.cfg.BudgetWindow<<failureBackoffMax {
				delete(b.watch.failed, id)
			}
		}
	}
	f := b.watch.failed[issueUUID]
	b.watch.failed[issueUUID] = failure{at: now, n: f.n + 1}
}

// noteSuccess forgets an issue's failures.
func (b *Bot) noteSuccess(issueUUID string) {
	b.watch.mu.Lock()
	defer b.watch.mu.Unlock()
	delete(b.watch.failed, issueUUID)
}

// sweepPage reads the next page of the open-issue list and applies what it shows.
// When a sweep is complete, watched open issues it did not list are flagged to be read
// again: they were resolved, closed or deleted (or the list filters differently).
func (b *Bot) sweepPage(ctx context.Context, openFrom time.Time, watched []*store.Summary) error {
	w := &b.watch
	w.mu.Lock()
	if w.sweepPage == 0 {
		w.sweepPage, w.sweepFrom, w.sweepSeen = 1, openFrom.Add(-sweepMargin), map[string]bool{}
	}
	page, from := w.sweepPage, w.sweepFrom
	w.mu.Unlock()

	channel, err := b.watchedChannel(ctx)
	if err != nil {
		return err
	}
	asked := b.now()
	rows, pi, err := b.guance.ListIssues(ctx, guance.IssueQuery{
		ChannelUUID: channel, Start: from, End: asked.Add(b.cfg.ClockSkew),
		PageIndex: page, PageSize: sweepPageSize,
		// With AND semantics this lists open issues; with OR it lists all of them.
		// Either way every open issue is among the rows.
		Filters: []guance.Filter{
			{Key: "statusType", Value: int(guance.StatusResolved), Equal: false},
			{Key: "statusType", Value: int(guance.StatusClosed), Equal: false},
		},
	})
	if err != nil {
		if errors.Is(err, guance.ErrNotFound) {
			b.forgetChannel(ctx)
		}
		return fmt.Errorf("list open issues (page %d): %w", page, err)
	}
	b.metrics.sweepPages.Inc()
	now := b.now()
	for _, is := range rows {
		if is.UUID == "" {
			continue
		}
		w.mu.Lock()
		w.sweepSeen[is.UUID] = true
		delete(w.unlisted, is.UUID)
		if w.listed == nil {
			w.listed = map[string]listing{}
		}
		w.listed[is.UUID] = listing{at: now, updateAt: is.UpdateAt.Unix()}
		w.mu.Unlock()
		if err := b.observe(ctx, is, asked); err != nil {
			return err
		}
	}
	last := len(rows) < sweepPageSize || (pi.TotalCount > 0 && page*sweepPageSize >= pi.TotalCount)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !last && page < sweepMaxPages {
		w.sweepPage++
		return nil
	}
	seen := w.sweepSeen
	w.sweepPage, w.sweepSeen, w.sweepDone = 0, nil, b.now()
	for id := range w.listed {
		if !seen[id] {
			delete(w.listed, id) // resolved or gone: no longer listed
		}
	}
	for _, r := range watched {
		if at, ok := w.unlisted[r.IssueUUID]; ok && b.now().Sub(at) < unlistedRecheck/time.Minute*b.cfg.BudgetWindow {
			continue
		}
		if seen[r.IssueUUID] || statusDone(r.StatusType) || r.Refresh {
			continue
		}
		if r.CreateAt > 0 && time.Unix(r.CreateAt, 0).Before(from) {
			continue
		}
		uuid := r.IssueUUID
		if _, _, err := b.updateIssue(ctx, uuid, func(x *store.Issue) error {
			if x.Refresh || statusDone(x.StatusType) {
				return errUnchanged
			}
			x.Refresh = true
			return nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if w.missed == nil {
			w.missed = map[string]bool{}
		}
		w.missed[uuid] = true
	}
	return nil
}

// unlistedRecheck is how often (at Guance's real one-minute window) an open issue that
// the open-issue list does not show is read again anyway.
const unlistedRecheck = 10 * time.Minute

// refreshIssue reads one issue again and applies it; an issue Guance no longer has is
// marked gone.
func (b *Bot) refreshIssue(ctx context.Context, rec store.Issue) error {
	asked := b.now()
	is, err := b.guance.GetIssue(ctx, rec.IssueUUID)
	if errors.Is(err, guance.ErrNotFound) {
		return b.markGone(ctx, rec.IssueUUID)
	}
	if err != nil {
		b.noteFailure(rec.IssueUUID, err)
		return fmt.Errorf("read issue %s again: %w", rec.IssueUUID, err)
	}
	b.noteSuccess(rec.IssueUUID)
	if err := b.observe(ctx, *is, asked); err != nil {
		return err
	}
	b.watch.mu.Lock()
	if b.watch.missed[rec.IssueUUID] && !statusDone(int(is.StatusType)) {
		// Open, yet a complete sweep did not list it: the list does not show it.
		if b.watch.unlisted == nil {
			b.watch.unlisted = map[string]time.Time{}
		}
		b.watch.unlisted[rec.IssueUUID] = b.now()
	}
	delete(b.watch.missed, rec.IssueUUID)
	b.watch.mu.Unlock()
	// observe leaves the flag when Guance's answer is not newer than the record.
	_, _, err = b.updateIssue(ctx, rec.IssueUUID, func(r *store.Issue) error {
		if !r.Refresh {
			return errUnchanged
		}
		r.Refresh = false
		return nil
	})
	return err
}

// scanCycle estimates how long the watcher takes to scan the replies of each of
// watched issues once, when open of them are open: the requests of a window left after
// the open-list pages (at most one in three), shared by every watched issue.
func (b *Bot) scanCycle(watched, open int) time.Duration {
	if watched == 0 {
		return 0
	}
	win := b.cfg.BudgetWindow.Seconds()
	steps := win / b.syncEvery().Seconds()
	pages := float64((open + sweepPageSize - 1) / sweepPageSize)
	sweeps := min(pages*win/b.sweepEvery().Seconds(), steps/3)
	scans := max(steps-sweeps, 0.1)
	return time.Duration(float64(watched) / scans * win * float64(time.Second))
}
