package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance/guancetest"
	"issuebot/store/storetest"
)

// These tests run issuebot as real OS processes against the fakes and restart them the
// way an operator's supervisor would: SIGTERM, SIGKILL right after Feishu created a card
// (before the bot could read the answer), crash loops, and two replicas on one Redis. A
// restarted process has nothing but the store, so they test what the store keeps: the
// Guance budget's window, the lease term, and the jobs.

const restartChat = "oc_restart"

// proc is one issuebot process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lines
	done chan struct{} // closed once the process has exited
}

// spawn starts issuebot with env; it is killed when the test ends if still running.
func spawn(t *testing.T, name string, env []string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append([]string{"ISSUEBOT_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH")}, env...)
	p := &proc{name: name, cmd: cmd, out: &lines{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start issuebot %s: %v", name, err)
	}
	go p.out.read(pr)
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill SIGKILLs the process and waits until it is gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop SIGTERMs the process and waits for it to exit, failing after 20 s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("issuebot %s still running 20 s after SIGTERM", p.name)
		p.kill()
	}
}

// rig is the fakes and the record of when each issue became visible in Guance.
type rig struct {
	t   *testing.T
	fs  *feishutest.Server
	gs  *guancetest.Server
	env []string

	mu       sync.Mutex
	appeared map[string]time.Time
	order    []string
	procs    []*proc
	sent     []sentReply
	// onSend, when set, is called (by the Feishu fake) with each message it created,
	// before its answer is written.
	onSend func(m feishutest.Message)
}

// sentReply is a thread reply a test sent.
type sentReply struct{ issue, text string }

// newRig builds the fakes and the environment of a process: the embedded store in its
// own directory, or a Redis database of its own (emptied first).
func newRig(t *testing.T, kind string, redisDB int) *rig {
	r := &rig{t: t, appeared: map[string]time.Time{}}
	r.fs = feishutest.NewServer(t)
	r.fs.AddChat(restartChat)
	r.fs.AddUser("ou_alice", "张三")
	r.fs.AfterSend = func(m feishutest.Message) {
		r.mu.Lock()
		f := r.onSend
		r.mu.Unlock()
		if f != nil {
			f(m)
		}
	}
	r.gs = guancetest.NewServer(t)
	r.env = []string{
		"FEISHU_APP_ID=" + r.fs.AppID, "FEISHU_APP_SECRET=" + r.fs.AppSecret, "FEISHU_BASE_URL=" + r.fs.URL,
		"FEISHU_CHAT_ID=" + restartChat,
		"GUANCE_API_KEY=" + r.gs.APIKey, "GUANCE_BASE_URL=" + r.gs.URL,
		"POLL_INTERVAL=2s", "HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info",
		// These tests count one card per issue; their 30 issues in 40 s would be a storm.
		"STORM_THRESHOLD=0",
	}
	switch kind {
	case "embedded":
		r.env = append(r.env, "DATA_DIR="+t.TempDir())
	case "redis":
		addr := storetest.RedisAddr(t)
		c := redis.NewClient(&redis.Options{Addr: addr, DB: redisDB})
		if err := c.FlushDB(t.Context()).Err(); err != nil {
			t.Fatalf("empty redis database %d: %v", redisDB, err)
		}
		_ = c.Close()
		r.env = append(r.env, fmt.Sprintf("REDIS_URL=redis://%s/%d", addr, redisDB))
	default:
		t.Fatalf("unknown store %q", kind)
	}
	return r
}

// start starts a process named name with extra variables.
func (r *rig) start(name string, extra ...string) *proc {
	r.t.Helper()
	p := spawn(r.t, name, append(slices.Clone(r.env), extra...))
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p
}

// waitPolled waits until Guance has answered n issue lists: the first poll is over once
// the second starts, and issues added from then on are new, not existing ones.
func (r *rig) waitPolled(n int) {
	r.t.Helper()
	r.waitUntil(30*time.Second, "issue lists", func() bool {
		c := 0
		for _, q := range r.gs.Requests() {
			if strings.HasSuffix(q.Path, "/issue/list") && q.Status == 200 {
				c++
			}
		}
		return c >= n
	})
}

// addIssue adds an issue in Guance now; late sets its createAt that far in the past, as
// monitors that write late do.
func (r *rig) addIssue(i int, late time.Duration) {
	id := fmt.Sprintf("issue_restart%04d", i)
	spec := guancetest.IssueSpec{UUID: id, Name: fmt.Sprintf("restart test %d", i)}
	if late > 0 {
		spec.CreateAt = time.Now().Add(-late)
	}
	r.mu.Lock()
	r.appeared[id] = time.Now()
	r.order = append(r.order, id)
	r.mu.Unlock()
	r.gs.AddIssue(spec)
}

// isDigest reports whether m is a storm digest card.
func isDigest(m feishutest.Message) bool {
	return m.MsgType == "interactive" && m.RootID == "" && strings.Contains(m.Content, "告警风暴")
}

// cards returns, per issue, the top-level cards posted in the chat for it (a storm
// digest is no issue's card).
func (r *rig) cards() map[string][]feishutest.Message {
	r.mu.Lock()
	ids := slices.Clone(r.order)
	r.mu.Unlock()
	out := map[string][]feishutest.Message{}
	for _, m := range r.fs.Messages(restartChat) {
		if m.MsgType != "interactive" || m.RootID != "" || isDigest(m) {
			continue
		}
		for _, id := range ids {
			if strings.Contains(m.Content, `"`+id+`"`) || strings.Contains(m.Content, id) {
				out[id] = append(out[id], m)
				break
			}
		}
	}
	return out
}

// envOf returns the value of the processes' environment variable key ("" if unset).
func (r *rig) envOf(key string) string {
	for _, kv := range r.env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// waitCarded waits until every issue added has a card.
func (r *rig) waitCarded(d time.Duration) {
	r.t.Helper()
	r.waitUntil(d, "a card for every issue", func() bool {
		r.mu.Lock()
		n := len(r.order)
		r.mu.Unlock()
		return len(r.cards()) == n
	})
}

func (r *rig) waitUntil(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("no %s within %v\n%s", what, d, r.output())
		}
		<-tick.C
	}
}

// output is every process's output, for failures.
func (r *rig) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, p := range r.procs {
		fmt.Fprintf(&b, "--- issuebot %s ---\n%s\n", p.name, p.out.text())
	}
	return b.String()
}

// reply sends a person's thread reply to card (of issue) over the long connection,
// retrying while no process is connected, and remembers it.
func (r *rig) reply(issue, card, text string) {
	r.t.Helper()
	r.mu.Lock()
	r.sent = append(r.sent, sentReply{issue: issue, text: text})
	n := len(r.sent)
	r.mu.Unlock()
	e := r.fs.MessageEvent(feishutest.MessageSpec{MessageID: fmt.Sprintf("om_reply_%03d", n), RootID: card,
		ChatID: restartChat, SenderOpenID: "ou_alice", Content: feishutest.TextContent(text)})
	r.waitUntil(20*time.Second, "a delivered thread reply", func() bool {
		ctx, cancel := context.WithTimeout(r.t.Context(), 5*time.Second)
		defer cancel()
		ack, err := r.fs.DeliverWS(ctx, e)
		return err == nil && ack.Code == 200
	})
}

// checkReplies asserts that every thread reply sent is in Guance exactly once, on its
// issue.
func (r *rig) checkReplies(d time.Duration) {
	r.t.Helper()
	r.mu.Lock()
	sent := slices.Clone(r.sent)
	r.mu.Unlock()
	count := func(sr sentReply) int {
		n := 0
		for _, g := range r.gs.Replies(sr.issue) {
			if g.Creator == r.gs.KeyID && strings.HasSuffix(g.Content, ": "+sr.text) {
				n++
			}
		}
		return n
	}
	r.waitUntil(d, "every thread reply in Guance", func() bool {
		for _, sr := range sent {
			if count(sr) == 0 {
				return false
			}
		}
		return true
	})
	for _, sr := range sent {
		if n := count(sr); n != 1 {
			r.t.Errorf("thread reply %q is in Guance %d times, want once", sr.text, n)
		}
	}
}

// latestCard returns the newest card in the chat and its issue.
func (r *rig) latestCard() (issue, card string, ok bool) {
	var newest time.Time
	for id, cs := range r.cards() {
		for _, c := range cs {
			if c.Created.After(newest) {
				newest, issue, card, ok = c.Created, id, c.ID, true
			}
		}
	}
	return issue, card, ok
}

// killAfterNextCard arms a SIGKILL of p for the moment right after Feishu created the
// next card, before p reads the answer; it returns a channel closed once p is dead. If no
// card is sent within d, p is killed anyway.
func (r *rig) killAfterNextCard(p *proc, d time.Duration) <-chan struct{} {
	return r.killAfterSend(p, d, func(m feishutest.Message) bool { return m.MsgType == "interactive" && m.RootID == "" })
}

// killAfterSend is killAfterNextCard for the next message that match accepts.
func (r *rig) killAfterSend(p *proc, d time.Duration, match func(feishutest.Message) bool) <-chan struct{} {
	return r.afterSend(d, match, p.kill)
}

// afterSend runs act right after Feishu created the next message that match accepts,
// before its sender reads the answer, or after d if none comes; the channel it returns
// is closed once act returned.
func (r *rig) afterSend(d time.Duration, match func(feishutest.Message) bool, act func()) <-chan struct{} {
	done := make(chan struct{})
	var once sync.Once
	run := func() {
		once.Do(func() {
			act()
			r.mu.Lock()
			r.onSend = nil
			r.mu.Unlock()
			close(done)
		})
	}
	r.mu.Lock()
	r.onSend = func(m feishutest.Message) {
		if match(m) {
			run()
		}
	}
	r.mu.Unlock()
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			run()
		}
	}()
	return done
}

// check asserts what every run must keep: each issue carded exactly once, and what
// checkProcesses asserts. It returns the latencies from an issue's appearance to its card.
func (r *rig) check() []time.Duration {
	r.t.Helper()
	cards := r.cards()
	r.mu.Lock()
	order := slices.Clone(r.order)
	r.mu.Unlock()
	var lat []time.Duration
	for _, id := range order {
		cs := cards[id]
		if len(cs) != 1 {
			r.t.Errorf("issue %s has %d cards, want exactly 1", id, len(cs))
		}
		if len(cs) > 0 {
			r.mu.Lock()
			d := cs[0].Created.Sub(r.appeared[id])
			r.mu.Unlock()
			lat = append(lat, d)
			if d > 11*time.Second {
				r.t.Logf("issue %s waited %v for its card", id, d.Round(10*time.Millisecond))
			}
		}
	}
	r.checkProcesses()
	slices.Sort(lat)
	return lat
}

// checkProcesses asserts what every run must keep whatever it posted: Guance never above
// its 20 requests in any 60 s and never throttling, and no secret or panic in any output.
func (r *rig) checkProcesses() {
	r.t.Helper()
	if n := r.gs.MaxInWindow(time.Minute); n > 20 {
		r.t.Errorf("Guance saw %d requests in one 60 s window, want at most 20", n)
	}
	if n := r.gs.Throttled(); n != 0 {
		r.t.Errorf("Guance throttled %d requests, want 0", n)
	}
	r.checkOutput()
}

// checkOutput asserts that no process's output holds a secret, a panic or a data race.
func (r *rig) checkOutput() {
	r.t.Helper()
	out := r.output()
	for _, secret := range []string{r.fs.AppSecret, r.gs.APIKey} {
		if strings.Contains(out, secret) {
			r.t.Error("a process output leaks a secret")
		}
	}
	if strings.Contains(out, "panic") || strings.Contains(out, "DATA RACE") {
		r.t.Errorf("a process panicked or raced:\n%s", out)
	}
}

// logGuanceOnFailure logs every Guance request, timed from begin, when the test failed:
// where the budget went is the first question about a slow card.
func (r *rig) logGuanceOnFailure(begin time.Time) {
	if !r.t.Failed() {
		return
	}
	for _, q := range r.gs.Requests() {
		r.t.Logf("guance %7.2fs %s %s %d", q.Time.Sub(begin).Seconds(), q.Method, q.Path, q.Status)
	}
}

// quantile returns the q-quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// reportLatency logs the latency quantiles and fails if an issue waited so long that
// a restart must have stalled the poller or the queue (a minute, as before the fix). The
// promised p99 of 3 × POLL_INTERVAL + 5 s is measured here and quoted, not asserted:
// a loaded machine must not fail the test on timing alone.
func reportLatency(t *testing.T, lat []time.Duration) {
	t.Helper()
	p50, p99 := quantile(lat, 0.5), quantile(lat, 0.99)
	t.Logf("new issue → card over %d issues: p50 %v, p99 %v (target p99 ≤ 11s at POLL_INTERVAL=2s)",
		len(lat), p50.Round(10*time.Millisecond), p99.Round(10*time.Millisecond))
	if p99 > 30*time.Second {
		t.Errorf("new issue → card p99 = %v: a restart stalled delivery (target 11s)", p99)
	}
}

// TestRestartsKeepEveryPromise: 30 issues over 40 s, 5 of them written 60–90 s late, a
// SIGTERM restart at 13 s and a SIGKILL right after Feishu created a card at about 27 s.
func TestRestartsKeepEveryPromise(t *testing.T) {
	for i, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, kind, 11+i)
			p := r.start("first", "INSTANCE_ID=replica-1")
			r.waitPolled(2)
			begin := time.Now()
			added := make(chan struct{})
			go func() {
				defer close(added)
				for i := range 30 {
					at := begin.Add(time.Duration(i) * 40 * time.Second / 30)
					time.Sleep(time.Until(at))
					late := time.Duration(0)
					if i%6 == 3 {
						late = 60*time.Second + time.Duration(i)*time.Second
					}
					r.addIssue(i, late)
				}
			}()
			time.Sleep(time.Until(begin.Add(13 * time.Second)))
			p.stop(t)
			p = r.start("after-sigterm", "INSTANCE_ID=replica-1")
			time.Sleep(time.Until(begin.Add(27 * time.Second)))
			select {
			case <-r.killAfterNextCard(p, 10*time.Second):
			case <-time.After(20 * time.Second):
				t.Fatal("the process was not killed")
			}
			p = r.start("after-sigkill", "INSTANCE_ID=replica-1")
			<-added
			r.waitCarded(60 * time.Second)
			p.stop(t)
			reportLatency(t, r.check())
			r.logGuanceOnFailure(begin)
		})
	}
}

// TestCrashLoopKeepsEveryPromise: five SIGKILLs within a minute (three of them right
// after Feishu created a card), each followed at once by a new process, while an issue
// appears every 2 s.
func TestCrashLoopKeepsEveryPromise(t *testing.T) {
	for i, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, kind, 13+i)
			p := r.start("run-0", "INSTANCE_ID=replica-1")
			r.waitPolled(2)
			begin := time.Now()
			added := make(chan struct{})
			go func() {
				defer close(added)
				for i := range 25 {
					time.Sleep(time.Until(begin.Add(time.Duration(i) * 2 * time.Second)))
					r.addIssue(i, 0)
				}
			}()
			for k := 1; k <= 5; k++ {
				time.Sleep(time.Until(begin.Add(time.Duration(k) * 9 * time.Second)))
				if k%2 == 1 {
					<-r.killAfterNextCard(p, 5*time.Second)
				} else {
					p.kill()
				}
				p = r.start(fmt.Sprintf("run-%d", k), "INSTANCE_ID=replica-1")
			}
			<-added
			r.waitCarded(60 * time.Second)
			p.stop(t)
			reportLatency(t, r.check())
		})
	}
}

// leaderSince returns when p's output last said it took the poller lease, or zero.
func leaderSince(p *proc) (time.Time, bool) {
	var at time.Time
	for _, s := range strings.Split(p.out.text(), "\n") {
		if !strings.Contains(s, `"holding the poller lease"`) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(s), &rec) == nil {
			at = rec.Time
		}
	}
	return at, !at.IsZero()
}

// leaderOf returns which of ps last took the poller lease, and when ("" if none did).
func leaderOf(ps map[string]*proc) (string, time.Time) {
	var name string
	var at time.Time
	for n, p := range ps {
		if since, ok := leaderSince(p); ok && since.After(at) {
			name, at = n, since
		}
	}
	return name, at
}

// TestReplicaTakesOverFromKilledLeader: two replicas on one Redis; the leader is
// SIGKILLed (right after Feishu created a card), the other takes over within 10 s; later
// the new leader is killed too. Every issue is carded exactly once within the budget,
// and every thread reply reaches Guance once — also one sent right after the kill into
// the thread of a card the dead leader posted but never recorded.
func TestReplicaTakesOverFromKilledLeader(t *testing.T) {
	t.Parallel()
	r := newRig(t, "redis", 15)
	ps := map[string]*proc{
		"a": r.start("a", "INSTANCE_ID=replica-a"),
		"b": r.start("b", "INSTANCE_ID=replica-b"),
	}
	r.waitPolled(2)
	begin := time.Now()
	added := make(chan struct{})
	go func() {
		defer close(added)
		for i := range 24 {
			time.Sleep(time.Until(begin.Add(time.Duration(i) * 2 * time.Second)))
			r.addIssue(i, 0)
		}
	}()
	for round, at := range []time.Duration{8 * time.Second, 26 * time.Second} {
		time.Sleep(time.Until(begin.Add(at)))
		name, _ := leaderOf(ps)
		if name == "" {
			t.Fatalf("round %d: no replica leads\n%s", round, r.output())
		}
		<-r.killAfterNextCard(ps[name], 5*time.Second)
		killed := time.Now()
		// A reply in the thread of the card sent just before the kill: the card is not
		// recorded yet, and the reply must not be lost.
		if issue, card, ok := r.latestCard(); ok {
			r.reply(issue, card, fmt.Sprintf("reply right after kill %d", round))
		}
		other := map[string]string{"a": "b", "b": "a"}[name]
		r.waitUntil(20*time.Second, "takeover", func() bool {
			n, since := leaderOf(ps)
			return n == other && since.After(killed)
		})
		_, since := leaderOf(ps)
		took := since.Sub(killed)
		t.Logf("round %d: replica %s took over %v after %s was killed", round, other, took.Round(10*time.Millisecond), name)
		if took > 10*time.Second {
			t.Errorf("round %d: takeover took %v, want at most 10 s", round, took)
		}
		ps[name] = r.start(name+fmt.Sprint(round), "INSTANCE_ID=replica-"+name)
	}
	<-added
	r.waitCarded(60 * time.Second)
	for i := range 3 { // and replies in steady state
		if issue, card, ok := r.latestCard(); ok {
			r.reply(issue, card, fmt.Sprintf("steady reply %d", i))
		}
	}
	r.checkReplies(60 * time.Second)
	for _, p := range ps {
		p.stop(t)
	}
	reportLatency(t, r.check())
}

// TestRoutesSurviveRestarts: a group bound from the chat keeps its route across a
// SIGTERM and a SIGKILL of real processes: its channel's issues keep going to it, each
// carded once, and the default chat gets only what no route takes.
func TestRoutesSurviveRestarts(t *testing.T) {
	for i, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			const routed = "oc_routed"
			r := newRig(t, kind, 9+i)
			r.fs.SetChat(routed, feishutest.ChatSpec{Name: "SRE"})
			r.gs.AddChannel("sre")
			p := r.start("first", "INSTANCE_ID=replica-1")
			r.waitPolled(2)
			bot := feishutest.Mention{Key: "@_user_1", OpenID: r.fs.BotOpenID}
			bind := r.fs.MessageEvent(feishutest.MessageSpec{MessageID: "om_bind", ChatID: routed, SenderOpenID: "ou_alice",
				Content: feishutest.TextContent("@_user_1 bind sre"), Mentions: []feishutest.Mention{bot}})
			r.waitUntil(20*time.Second, "the bind delivered", func() bool {
				ack, err := r.fs.DeliverWS(t.Context(), bind)
				return err == nil && ack.Code == 200
			})
			answered := func() bool {
				for _, m := range r.fs.Messages(routed) {
					if m.ParentID == "om_bind" && strings.Contains(m.Content, "Bound") {
						return true
					}
				}
				return false
			}
			r.waitUntil(20*time.Second, "the bind answered", answered)
			cardsIn := func(chat, issue string) int {
				n := 0
				for _, m := range r.fs.Messages(chat) {
					if m.MsgType == "interactive" && m.RootID == "" && strings.Contains(m.Content, `"`+issue+`"`) {
						n++
					}
				}
				return n
			}
			var issues []string
			check := func(step string) {
				id := fmt.Sprintf("issue_routed_%s", step)
				issues = append(issues, id)
				r.gs.AddIssue(guancetest.IssueSpec{UUID: id, Name: "routed " + step, Channels: []string{"sre"}})
				r.waitUntil(30*time.Second, "the card of "+id+" in the bound group", func() bool { return cardsIn(routed, id) == 1 })
			}
			check("first")
			p.stop(t)
			p = r.start("after-sigterm", "INSTANCE_ID=replica-1")
			check("after-sigterm")
			p.kill()
			p = r.start("after-sigkill", "INSTANCE_ID=replica-1")
			check("after-sigkill")
			r.gs.AddIssue(guancetest.IssueSpec{UUID: "issue_unrouted", Name: "no route"})
			r.waitUntil(30*time.Second, "the unrouted issue in the default chat", func() bool { return cardsIn(restartChat, "issue_unrouted") == 1 })
			p.stop(t)
			for _, id := range issues {
				if n, d := cardsIn(routed, id), cardsIn(restartChat, id); n != 1 || d != 0 {
					t.Errorf("issue %s: %d cards in the bound group, %d in the default chat; want 1 and 0", id, n, d)
				}
			}
		})
	}
}
