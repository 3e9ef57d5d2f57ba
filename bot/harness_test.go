package bot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
	"issuebot/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

const testChat = "oc_issues"

// harness wires a Bot to the Guance and Feishu fakes, the real clients and a real
// store, and can stop and restart it the way a process would be.
type harness struct {
	t     testing.TB
	gs    *guancetest.Server
	fs    *feishutest.Server
	fc    *feishu.Client
	gc    *guance.Client
	kind  string // "redis" or "embedded"
	path  string // embedded file
	st    store.Store
	cfg   Config
	logs  *syncBuffer
	bot   *Bot
	ctx   context.Context // the running bot's context
	stop  context.CancelFunc
	done  chan error
	limit int
	win   time.Duration
	// intake, when set, runs a long-connection intake with every started bot.
	intake bool
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHarness builds fakes and clients. Time is scaled: the Guance budget of limit
// requests counts over win instead of a minute, on both sides.
func newHarness(t testing.TB, kind string, limit int, win time.Duration, fsOpts ...feishutest.Option) *harness {
	t.Helper()
	h := &harness{t: t, kind: kind, logs: &syncBuffer{}, limit: limit, win: win}
	h.gs = guancetest.NewServer(t, guancetest.WithLimit(20, win))
	h.fs = feishutest.NewServer(t, fsOpts...)
	h.fs.AddChat(testChat)
	var err error
	h.fc, err = feishu.NewClient(feishu.Config{AppID: h.fs.AppID, AppSecret: h.fs.AppSecret, BaseURL: h.fs.URL, Logger: h.logger()})
	if err != nil {
		t.Fatal(err)
	}
	limiter := guance.NewWindowLimiter(limit, win, guance.WithReserve(Reserve(limit)))
	h.gc, err = guance.NewClient(h.gs.URL, h.gs.APIKey, guance.WithLimiter(limiter), guance.WithLogger(h.logger()))
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case "redis":
		h.st = storetest.Redis(t)
	case "embedded":
		h.path = filepath.Join(t.TempDir(), store.EmbeddedFile)
		h.openEmbedded()
	default:
		t.Fatalf("unknown store kind %q", kind)
	}
	h.cfg = Config{
		ChatID: testChat, PollInterval: 100 * time.Millisecond, RateLimit: limit, BudgetWindow: win,
		ConsoleURL: "https://console.example", ChatSendInterval: 20 * time.Millisecond,
		Location: time.UTC, Budget: limiter.Stats,
	}
	t.Cleanup(func() {
		h.kill()
		if h.kind == "embedded" && h.st != nil {
			_ = h.st.Close()
		}
		if t.Failed() {
			t.Logf("bot logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (h *harness) openEmbedded() {
	h.t.Helper()
	st, err := store.OpenEmbedded(h.path)
	if err != nil {
		h.t.Fatalf("open embedded store: %v", err)
	}
	h.st = st
}

// start runs a fresh Bot (a new "process") on the harness's store.
func (h *harness) start(setup ...func(*Bot)) *Bot {
	h.t.Helper()
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	for _, f := range setup {
		f(b)
	}
	h.bot, h.stop, h.done = b, cancel, make(chan error, 1)
	if !h.intake {
		go func() { h.done <- b.Run(ctx) }()
		return b
	}
	in, err := feishu.NewIntake(feishu.IntakeConfig{
		AppID: h.fs.AppID, AppSecret: h.fs.AppSecret, BaseURL: h.fs.URL, Logger: h.logger(),
	}, b)
	if err != nil {
		h.t.Fatal(err)
	}
	intakeDone := make(chan error, 1)
	go func() { intakeDone <- in.Run(ctx) }()
	go func() {
		err := b.Run(ctx)
		if ierr := <-intakeDone; err == nil {
			err = ierr
		}
		h.done <- err
	}()
	waitFor(h.t, 10*time.Second, "the long connection", in.Ready)
	return b
}

// terminate is SIGTERM: cancel, and wait for Run to finish its work in hand.
func (h *harness) terminate() {
	h.t.Helper()
	if h.stop == nil {
		return
	}
	h.stop()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return within 30 s of SIGTERM")
	}
	h.stop = nil
	h.restartStore()
}

// kill is kill -9 as far as state goes: the bot is abandoned without waiting, and
// (embedded) the file is reopened as a new process would. Work the old bot abandoned
// through its afterSend hook left the store exactly as a crash would.
func (h *harness) kill() {
	if h.stop == nil {
		return
	}
	h.stop()
	<-h.done // the goroutines must be gone before the file is reused in-process
	h.stop = nil
	h.restartStore()
}

func (h *harness) restartStore() {
	if h.kind == "embedded" {
		_ = h.st.Close()
		h.openEmbedded()
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// cardsFor counts the messages in the chat that are cards of issueUUID.
func (h *harness) cardsFor(issueUUID string) int {
	n := 0
	for _, m := range h.fs.Messages(testChat) {
		if m.MsgType == "interactive" && strings.Contains(m.Content, `"issue":"`+issueUUID+`"`) {
			n++
		}
	}
	return n
}

// eachCardedOnce checks that the chat holds one card per issue of uuids, and no other.
func (h *harness) eachCardedOnce(uuids []string) {
	h.t.Helper()
	if got := h.cardCount(); got != len(uuids) {
		h.t.Errorf("cards in chat = %d, want %d", got, len(uuids))
	}
	for _, u := range uuids {
		if got := h.cardsFor(u); got != 1 {
			h.t.Errorf("issue %s has %d cards, want 1", u, got)
		}
	}
}

func (h *harness) cardCount() int {
	n := 0
	for _, m := range h.fs.Messages(testChat) {
		if m.MsgType == "interactive" {
			n++
		}
	}
	return n
}

// bootstrapped waits until the running bot finished its first poll.
func (h *harness) bootstrapped() {
	h.t.Helper()
	waitFor(h.t, 10*time.Second, "the first poll", func() bool {
		v, err := h.st.Cursor(context.Background(), cursorBootstrap)
		return err == nil && v == 1
	})
}

// quiet waits until no card is queued and n more polls completed.
func (h *harness) quiet(n int) {
	h.t.Helper()
	waitFor(h.t, 20*time.Second, "an empty card queue", func() bool {
		c, err := h.st.CountJobs(context.Background(), queueCards)
		return err == nil && c == 0
	})
	start := h.bot.lastPoll.Load()
	seen := 0
	waitFor(h.t, 20*time.Second, "more polls", func() bool {
		if v := h.bot.lastPoll.Load(); v != start {
			start = v
			seen++
		}
		return seen >= n
	})
}

// scanHarness returns a harness and a bot that is not running, for driving its steps
// (scans, posts, queued jobs) one by one; the offset shifts the Guance fake's clock.
func scanHarness(t *testing.T) (*harness, *Bot, *atomic.Int64) {
	t.Helper()
	h := newHarness(t, "embedded", 18, time.Second)
	var offset atomic.Int64 // the Guance clock's offset from now
	h.gs.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	b := New(h.cfg, h.fc, h.gc, h.st, nil, h.logger())
	b.term.Store(1) // stepped by hand as the leader of term 1 (queues' Pass)
	return h, b, &offset
}

// carded records a card for a Guance issue, as delivery would, sent at sentAt.
func carded(t *testing.T, h *harness, issueUUID string, sentAt time.Time) store.Issue {
	t.Helper()
	is, ok := h.gs.Issue(issueUUID)
	if !ok {
		t.Fatalf("no issue %s", issueUUID)
	}
	rec := store.Issue{IssueUUID: issueUUID, CardRevision: 1,
		Cards:    []store.Card{{ChatID: testChat, MessageID: "om_card_" + issueUUID, PatchedRevision: 1, SentAt: sentAt}},
		UpdateAt: is.UpdateAt, ScannedUpdateAt: is.UpdateAt, StatusType: is.StatusType,
		Name: is.Name, CreateAt: is.CreateAt}
	if err := h.st.PutIssue(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// card is a record's card in the test chat (the zero Card when it has none).
func chatCard(rec store.Issue) store.Card {
	if c := rec.Card(testChat); c != nil {
		return *c
	}
	return store.Card{}
}

// countingStore counts the reads of the thread queue, and runs onUpdate (when set)
// before each UpdateIssue and onPut before each PutJob.
type countingStore struct {
	store.Store
	threadReads atomic.Int64
	onUpdate    func()
	onPut       func(queue string)
	// failDeleteIf, when set and true for a queue, makes DeleteJobIf fail there.
	failDeleteIf func(queue string) bool
}

func (s *countingStore) DeleteJobIf(ctx context.Context, queue, id string, rev uint64) (bool, error) {
	if s.failDeleteIf != nil && s.failDeleteIf(queue) {
		return false, errors.New("injected: the store is unreachable")
	}
	return s.Store.DeleteJobIf(ctx, queue, id, rev)
}

func (s *countingStore) PutJob(ctx context.Context, queue string, j store.Job) error {
	if s.onPut != nil {
		s.onPut(queue)
	}
	return s.Store.PutJob(ctx, queue, j)
}

func (s *countingStore) UpdateIssue(ctx context.Context, issueUUID string, fn func(*store.Issue) error) (store.Issue, error) {
	if s.onUpdate != nil {
		s.onUpdate()
	}
	return s.Store.UpdateIssue(ctx, issueUUID, fn)
}

func (s *countingStore) DueJobs(ctx context.Context, queue string, now time.Time, limit int) ([]store.Job, error) {
	if queue == queueThread {
		s.threadReads.Add(1)
	}
	return s.Store.DueJobs(ctx, queue, now, limit)
}

// crashOnce returns a hook for the bot's after-write points (afterReply,
// afterThreadPost): the first call sends its id on at and then hangs until the
// running bot is stopped, as a process killed right after the write would; later calls
// pass.
func (h *harness) crashOnce(at chan<- string) func(id string) error {
	ctx := h.ctx
	var once sync.Once
	return func(id string) error {
		hit := false
		once.Do(func() { hit = true })
		if !hit {
			return nil
		}
		at <- id
		<-ctx.Done()
		return errors.New("killed")
	}
}
