package bot

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance/guancetest"
)

// scenario is the change-detection load of issue #5: many carded open issues, and
// Guance replies written on some of them over a while.
type scenario struct {
	bumps   bool          // a new reply bumps the issue's updateAt
	win     time.Duration // the budget window (a minute in production)
	issues  int
	replies int
	spread  time.Duration // the replies are written evenly over this
	poll    time.Duration // POLL_INTERVAL at the real scale; 0 means 10 s
}

// scenarioResult is what a scenario measured.
type scenarioResult struct {
	staleness []time.Duration // reply written in Guance → posted in its thread, sorted
	maxInWin  int             // most Guance requests in any budget window
	throttled int
	posts     int // Guance replies posted into threads
	// perReply is the Guance requests spent, from the first reply written to the last
	// one posted, per reply posted.
	perReply float64
	report   Report
	requests map[string]int // Guance requests by kind
}

func (r scenarioResult) pct(p float64) time.Duration {
	if len(r.staleness) == 0 {
		return 0
	}
	return r.staleness[min(len(r.staleness)-1, int(p*float64(len(r.staleness))))]
}

// runScenario cards s.issues issues, writes s.replies human replies on them in Guance
// and waits for every one to reach its thread. The bot runs with GUANCE_RATE_LIMIT=18
// against a fake that allows 20, both counting over s.win; POLL_INTERVAL is s.poll
// scaled to s.win (10 s at the real scale by default).
func runScenario(tb testing.TB, s scenario) scenarioResult {
	tb.Helper()
	// Feishu's per-chat limit is raised so that carding 150 issues is quick; this is
	// about the Guance budget.
	h := newHarness(tb, "embedded", 18, s.win, feishutest.WithRateLimits(60, 5, 200))
	h.gs.ReplyBumpsUpdateAt = s.bumps
	poll := s.poll
	if poll == 0 {
		poll = 10 * time.Second
	}
	h.cfg.PollInterval = time.Duration(float64(poll) * float64(s.win) / float64(time.Minute))
	h.cfg.Overlap = 5 * s.win // five minutes at the real scale
	h.cfg.ClockSkew = s.win
	h.start()
	h.bootstrapped()

	uuids := make([]string, s.issues)
	for i := range uuids {
		uuids[i] = h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("load %03d", i)}).UUID
	}
	// Cards go out 20 ms apart with several store writes each: seconds, more on a busy
	// machine, whatever the window.
	waitFor(tb, max(time.Minute, 10*s.win), "every card", func() bool { return h.cardCount() >= s.issues })
	if n := h.cardCount(); n != s.issues {
		tb.Fatalf("%d cards for %d issues", n, s.issues)
	}

	var mu sync.Mutex
	written := map[string]time.Time{} // reply text → when it was written
	firstWritten := time.Now()
	every := s.spread / time.Duration(s.replies)
	tick := time.NewTicker(every)
	for i := range s.replies {
		issue := uuids[(i*7919)%len(uuids)] // spread over the issues, some twice
		text := fmt.Sprintf("load reply %02d", i)
		mu.Lock()
		written[text] = time.Now()
		mu.Unlock()
		h.gs.AddHumanReply(issue, "王五", text)
		<-tick.C
	}
	tick.Stop()

	arrived := map[string]time.Duration{}
	deadline := 3*time.Duration(s.issues)*h.bot.syncEvery() + 10*s.win
	waitFor(tb, deadline, "every reply in its thread", func() bool {
		now := time.Now()
		for _, m := range h.fs.Messages(testChat) {
			if m.MsgType != "text" {
				continue
			}
			for text, at := range written {
				if _, ok := arrived[text]; !ok && strings.Contains(m.Content, text) {
					arrived[text] = now.Sub(at)
				}
			}
		}
		return len(arrived) == s.replies
	})
	waitFor(tb, 10*time.Second, "an empty thread queue", func() bool {
		n, err := h.st.CountJobs(tb.Context(), queueThread)
		return err == nil && n == 0
	})
	var res scenarioResult
	for _, d := range arrived {
		res.staleness = append(res.staleness, d)
	}
	slices.Sort(res.staleness)
	for _, m := range h.fs.Messages(testChat) {
		if m.MsgType == "text" && strings.Contains(m.Content, "[Guance]") {
			res.posts++
		}
	}
	res.requests = requestKinds(h.gs.Requests())
	lastArrived := firstWritten
	for text, d := range arrived {
		if at := written[text].Add(d); at.After(lastArrived) {
			lastArrived = at
		}
	}
	spent := 0
	for _, r := range h.gs.Requests() {
		if !r.Time.Before(firstWritten) && !r.Time.After(lastArrived) {
			spent++
		}
	}
	if res.posts > 0 {
		res.perReply = float64(spent) / float64(res.posts)
	}
	res.maxInWin = h.gs.MaxInWindow(s.win)
	res.throttled = h.gs.Throttled()
	var err error
	if res.report, err = h.bot.report(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	return res
}

// requestKinds counts Guance requests by kind: reply/list, issue/get, or the path.
func requestKinds(reqs []guancetest.Request) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		kind := strings.TrimPrefix(r.Path, "/api/v1/")
		switch {
		case strings.Contains(r.Path, "/reply/"):
			kind = "reply/list"
		case strings.HasSuffix(r.Path, "/get"):
			kind = "issue/get"
		}
		out[kind]++
	}
	return out
}

// TestChangeDetectionWithinBudget: 150 carded open issues and 40 Guance replies over
// two budget windows ("2 minutes"; time is scaled 60×: a window is 1 s): the fake never
// sees more than GUANCE_RATE_LIMIT requests in a window and never throttles, every
// reply reaches its thread exactly once — whether or not replies bump updateAt — and
// the status report's bound covers the longest wait.
func TestChangeDetectionWithinBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	for _, bumps := range []bool{true, false} {
		t.Run(fmt.Sprintf("replyBumpsUpdateAt=%v", bumps), func(t *testing.T) {
			t.Parallel()
			res := runScenario(t, scenario{bumps: bumps, win: time.Second, issues: 150, replies: 40, spread: 2 * time.Second})
			if res.maxInWin > 18 || res.throttled != 0 {
				t.Errorf("Guance saw up to %d requests in a window and throttled %d times; want ≤ 18 and 0", res.maxInWin, res.throttled)
			}
			if res.posts != 40 {
				t.Errorf("%d replies posted into threads, want 40 (each once)", res.posts)
			}
			if res.report.Watched != 150 || res.report.OldestScan > 2*res.report.Cycle {
				t.Errorf("status report: watched %d, oldest scan %v, cycle %v", res.report.Watched, res.report.OldestScan, res.report.Cycle)
			}
			t.Logf("staleness p50 %v p99 %v (scaled 60×: %v / %v); max %d requests per window; status: oldest scan %v, cycle %v; requests %v",
				res.pct(0.5), res.pct(0.99), 60*res.pct(0.5), 60*res.pct(0.99), res.maxInWin, res.report.OldestScan, res.report.Cycle, res.requests)
		})
	}
}

// benchWindow is the budget window of a benchmark: ISSUEBOT_BENCH_WINDOW, or a minute
// (the real scale). A shorter window compresses time; the benchmarks scale their
// numbers back to a minute.
func benchWindow(b *testing.B) time.Duration {
	b.Helper()
	v := os.Getenv("ISSUEBOT_BENCH_WINDOW")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("ISSUEBOT_BENCH_WINDOW=%q is not a positive duration", v)
	}
	return d
}

// BenchmarkReplySyncStaleness reports Guance reply → thread staleness (p50, p99) with
// 150 carded open issues and 40 replies over two minutes, in both updateAt behaviours,
// at POLL_INTERVAL=2s and 10s, and the Guance requests spent per reply delivered (the
// best possible is one reply list per changed issue). ISSUEBOT_BENCH_WINDOW sets the
// budget window (default 1m, the real scale; a shorter window compresses time, and the
// numbers are scaled back to a minute).
//
//	go test ./bot -run '^$' -bench ReplySyncStaleness -benchtime 1x -timeout 3h
func BenchmarkReplySyncStaleness(b *testing.B) {
	win := benchWindow(b)
	scale := float64(time.Minute) / float64(win)
	for _, poll := range []time.Duration{2 * time.Second, 10 * time.Second} {
		for _, bumps := range []bool{true, false} {
			b.Run(fmt.Sprintf("poll=%v/replyBumpsUpdateAt=%v", poll, bumps), func(b *testing.B) {
				for range b.N {
					res := runScenario(b, scenario{bumps: bumps, win: win, issues: 150, replies: 40, spread: 2 * win, poll: poll})
					b.ReportMetric(res.pct(0.5).Seconds()*scale, "p50_s")
					b.ReportMetric(res.pct(0.99).Seconds()*scale, "p99_s")
					b.ReportMetric(res.perReply, "req/reply")
					b.ReportMetric(float64(res.maxInWin), "max_req/window")
					b.ReportMetric(float64(res.throttled), "throttles")
					b.ReportMetric(float64(res.posts), "posts")
				}
			})
		}
	}
}
