package bot

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"issuebot/guance/guancetest"
)

// BenchmarkNewIssueLatency measures, in real time against the fakes, how long a new
// Guance issue takes to appear as a card (issue created → card recorded by Feishu) at
// POLL_INTERVAL=2s and at the default 10s, with the real budget of 18 requests per
// minute against Guance's 20. It reports p50/p99/max latency and the Guance requests
// spent per minute. It takes minutes; run it on its own:
//
//	go test ./bot -run '^$' -bench NewIssueLatency -benchtime 1x
func BenchmarkNewIssueLatency(b *testing.B) {
	for _, tc := range []struct {
		interval time.Duration
		issues   int
		span     time.Duration
	}{
		{2 * time.Second, 40, 100 * time.Second},
		{10 * time.Second, 30, 150 * time.Second},
	} {
		b.Run(fmt.Sprintf("poll=%s", tc.interval), func(b *testing.B) {
			for range b.N {
				runLatency(b, tc.interval, tc.issues, tc.span)
			}
		})
	}
}

func runLatency(b *testing.B, interval time.Duration, n int, span time.Duration) {
	h := newHarness(b, "embedded", 18, time.Minute)
	h.cfg.PollInterval = interval
	h.cfg.ChatSendInterval = 250 * time.Millisecond
	start := time.Now()
	h.start()
	h.bootstrapped()

	rng := rand.New(rand.NewPCG(1, uint64(interval)))
	created := map[string]time.Time{}
	begin := time.Now()
	offsets := make([]time.Duration, n)
	for i := range offsets {
		offsets[i] = time.Duration(rng.Int64N(int64(span)))
	}
	slices.Sort(offsets)
	for i, off := range offsets {
		if d := time.Until(begin.Add(off)); d > 0 {
			time.Sleep(d) // issues arrive at random moments over the span
		}
		is := h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("latency %d", i)})
		created[is.UUID] = time.Now()
	}
	waitFor(b, 2*time.Minute, "all cards", func() bool { return h.cardCount() >= n })
	elapsed := time.Since(start)

	var lat []time.Duration
	for _, m := range h.fs.Messages(testChat) {
		for u, at := range created {
			if h.cardsFor(u) == 1 && containsIssue(m.Content, u) {
				lat = append(lat, m.Created.Sub(at))
			}
		}
	}
	slices.Sort(lat)
	if len(lat) != n {
		b.Fatalf("matched %d latencies for %d issues", len(lat), n)
	}
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(pct(0.50).Seconds(), "p50-s")
	b.ReportMetric(pct(0.99).Seconds(), "p99-s")
	b.ReportMetric(lat[len(lat)-1].Seconds(), "max-s")
	b.ReportMetric(float64(len(h.gs.Requests()))/elapsed.Minutes(), "guance-req/min")
	b.ReportMetric(float64(h.gs.MaxInWindow(time.Minute)), "max-req-in-60s")
	b.ReportMetric(float64(h.gs.Throttled()), "throttled")
}

func containsIssue(content, uuid string) bool {
	return strings.Contains(content, `"issue":"`+uuid+`"`)
}

// BenchmarkThreadReplyLatency measures, in real time against the fakes, how fast a
// thread reply is acknowledged over the long connection and how long it takes to
// become a Guance reply, at the default POLL_INTERVAL (10s) with the real budget of 18
// requests per minute shared with the poller. Run it on its own:
//
//	go test ./bot -run '^$' -bench ThreadReplyLatency -benchtime 1x
func BenchmarkThreadReplyLatency(b *testing.B) {
	for range b.N {
		h := newHarness(b, "embedded", 18, time.Minute)
		h.cfg.PollInterval = 10 * time.Second
		h.intake = true
		h.fs.AddUser("ou_alice", "张三")
		h.start()
		h.bootstrapped()
		issue, card := h.cardedIssue("latency")
		var acks, syncs []time.Duration
		deliver := func(payload []byte) {
			start := time.Now()
			ack, err := h.fs.DeliverWS(b.Context(), payload)
			if err != nil || ack.Code != 200 {
				b.Fatalf("deliver: %v %v", ack, err)
			}
			acks = append(acks, time.Since(start))
		}
		const n = 12
		for i := range n {
			payload := threadReply(h.fs, fmt.Sprintf("om_lat%02d", i), card, fmt.Sprintf("status %d", i))
			start := time.Now()
			deliver(payload)
			waitFor(b, time.Minute, "the Guance reply", func() bool { return len(h.botReplies(issue)) == i+1 })
			syncs = append(syncs, time.Since(start))
			for range 8 { // redeliveries: the dedupe path
				deliver(threadReply(h.fs, fmt.Sprintf("om_lat%02d", i), card, fmt.Sprintf("status %d", i)))
			}
			time.Sleep(4 * time.Second) // people do not reply every instant
		}
		slices.Sort(acks)
		slices.Sort(syncs)
		pct := func(d []time.Duration, p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
		b.ReportMetric(float64(pct(acks, 0.5).Microseconds())/1000, "ack-p50-ms")
		b.ReportMetric(float64(pct(acks, 0.99).Microseconds())/1000, "ack-p99-ms")
		b.ReportMetric(pct(syncs, 0.5).Seconds(), "reply-p50-s")
		b.ReportMetric(pct(syncs, 0.99).Seconds(), "reply-p99-s")
		b.ReportMetric(float64(h.gs.Throttled()), "throttled")
		if got := len(h.botReplies(issue)); got != n {
			b.Fatalf("%d replies in Guance, want %d", got, n)
		}
	}
}
