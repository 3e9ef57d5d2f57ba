package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
	"issuebot/store/storetest"
)

// BenchmarkMemoryWithTrackedIssues measures the resident memory of the issuebot binary
// (built with go build, run as its own process against the fakes) and the size of its
// store while it tracks 10 000 carded open issues, on each store: the records are
// seeded before the start, then the bot runs for ISSUEBOT_BENCH_RUN (default 60 s),
// watching them within the Guance budget. Reported: peak and final VmRSS in MB, and
// the store's size (the embedded file; Redis: the MEMORY USAGE of every key).
//
//	go test . -run '^$' -bench MemoryWithTrackedIssues -benchtime 1x
func BenchmarkMemoryWithTrackedIssues(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "issuebot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	run := time.Minute
	if v := os.Getenv("ISSUEBOT_BENCH_RUN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("ISSUEBOT_BENCH_RUN=%q: %v", v, err)
		}
		run = d
	}
	const tracked = 10000
	for _, kind := range []string{"embedded", "redis"} {
		b.Run("store="+kind, func(b *testing.B) {
			for range b.N {
				peak, final, anon, size := memoryRun(b, bin, kind, tracked, run)
				b.ReportMetric(peak, "peak_rss_MB")
				b.ReportMetric(final, "rss_MB")
				b.ReportMetric(anon, "peak_anon_MB")
				b.ReportMetric(size, "store_MB")
				b.ReportMetric(tracked, "tracked")
			}
		})
	}
}

// memoryRun seeds the store, runs the binary for d and samples its RSS every second.
func memoryRun(b *testing.B, bin, kind string, tracked int, d time.Duration) (peakMB, finalMB, anonMB, storeMB float64) {
	fs := feishutest.NewServer(b)
	fs.AddChat("oc_mem")
	gs := guancetest.NewServer(b)
	env := []string{
		"FEISHU_APP_ID=" + fs.AppID, "FEISHU_APP_SECRET=" + fs.AppSecret, "FEISHU_BASE_URL=" + fs.URL,
		"FEISHU_CHAT_ID=oc_mem", "GUANCE_API_KEY=" + gs.APIKey, "GUANCE_BASE_URL=" + gs.URL,
		"HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=warn", "INSTANCE_ID=mem", "PATH=" + os.Getenv("PATH"), os.Getenv("ISSUEBOT_BENCH_ENV"),
	}
	ctx := context.Background()
	var st store.Store
	var rc *redis.Client
	dir := b.TempDir()
	switch kind {
	case "embedded":
		e, err := store.OpenEmbedded(filepath.Join(dir, store.EmbeddedFile))
		if err != nil {
			b.Fatal(err)
		}
		st = e
		env = append(env, "DATA_DIR="+dir)
	default:
		addr := storetest.RedisAddr(b)
		rc = redis.NewClient(&redis.Options{Addr: addr, DB: 8})
		if err := rc.FlushDB(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = rc.FlushDB(context.Background()).Err(); _ = rc.Close() })
		r, err := store.OpenRedis(ctx, fmt.Sprintf("redis://%s/8", addr))
		if err != nil {
			b.Fatal(err)
		}
		st = r
		env = append(env, fmt.Sprintf("REDIS_URL=redis://%s/8", addr))
	}
	created := time.Now().Add(-2 * time.Hour)
	desc := strings.Repeat("磁盘使用率超过阈值 disk usage above threshold. ", 12)
	for i := range tracked {
		is := gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("tracked issue %05d on host-%d", i, i%300), Level: "system_level_2",
			Description: desc, Text: desc, CreateAt: created})
		// As the bot keeps it: extend.text, and no description beside it.
		snap, _ := json.Marshal(map[string]any{"issue": guance.Issue{UUID: is.UUID, Name: is.Name,
			Level: "system_level_2", StatusType: guance.StatusOpen, CreateAt: guance.Time(created.Unix()),
			UpdateAt: guance.Time(is.UpdateAt), Extend: guance.Extend{Text: desc}}})
		rec := store.Issue{IssueUUID: is.UUID, CardRevision: 1, UpdateAt: is.UpdateAt, ScannedUpdateAt: is.UpdateAt,
			StatusType: 10, Level: "system_level_2", Name: is.Name, CreateAt: created.Unix(), Snapshot: snap,
			Cards: []store.Card{{ChatID: "oc_mem", MessageID: fmt.Sprintf("om_mem_%05d", i), PatchedRevision: 1,
				SentAt: created.Add(time.Minute)}}}
		if err := st.PutIssue(ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
	// The first poll marks what exists as seen rather than carding it.
	_ = st.Close()

	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	b.ResetTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		rss, anon := vmRSS(cmd.Process.Pid)
		peakMB, finalMB, anonMB = max(peakMB, rss), rss, max(anonMB, anon)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	switch kind {
	case "embedded":
		fi, err := os.Stat(filepath.Join(dir, store.EmbeddedFile))
		if err != nil {
			b.Fatal(err)
		}
		storeMB = float64(fi.Size()) / (1 << 20)
	default:
		var total int64
		iter := rc.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			n, err := rc.MemoryUsage(ctx, iter.Val()).Result()
			if err == nil {
				total += n
			}
		}
		storeMB = float64(total) / (1 << 20)
	}
	mapped := "the binary's and the store file's mapped pages"
	if kind == "redis" {
		mapped = "the binary's mapped pages"
	}
	b.Logf("%s store: %d tracked issues, peak RSS %.1f MB (anonymous %.1f MB; the rest is %s), RSS %.1f MB after %v, store %.1f MB; Guance requests %d (max %d in 60 s, limit 20)",
		kind, tracked, peakMB, anonMB, mapped, finalMB, d, storeMB, len(gs.Requests()), gs.MaxInWindow(time.Minute))
	return peakMB, finalMB, anonMB, storeMB
}

// vmRSS reads a process's resident set size, and its anonymous part (the heap and
// stacks, not mapped files), in MB from /proc.
func vmRSS(pid int) (rss, anon float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			rss = kb / 1024
		case "RssAnon":
			anon = kb / 1024
		}
	}
	return rss, anon
}
