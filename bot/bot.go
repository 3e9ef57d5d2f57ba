// Package bot is issuebot's application: it takes Feishu events and card callbacks,
// talks to Guance through package guance, keeps its state in package store, and
// speaks to Feishu through package bot/feishu. One file per flow:
//
//	newissues.go  the poller finds new issues        newcards.go  posts their cards once
//	toguance.go   thread messages → Guance replies   tochat.go    Guance replies → threads
//	watcher.go    finds Guance's changes and replies buttons.go   status changes from the chat
//	record.go     the issue record and its card data patches.go   keeps cards current
//	answers.go    help, status and notices           report.go    the status report
//	routes.go     which chats get an issue; bind     chats.go     groups: names, welcome, goodbye
//	commands.go   what a message to the bot asks for list.go      a chat's open issues
//	storm.go      a storm of issues → one digest     webhook.go   Guance's hooks → watcher hints
//
// and the shared mechanisms: leader.go (the lease and its term), schedule.go (the Guance
// budget), queue.go (the queues on the bot/jobs engine and their retry policy).
package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/guance"
	"issuebot/store"
)

// Messenger is what the bot needs from Feishu.
type Messenger interface {
	BotOpenID(ctx context.Context) (string, error)
	SendCard(ctx context.Context, chatID string, card []byte, uuid string) (feishu.Sent, error)
	SendText(ctx context.Context, chatID, text, uuid string) (feishu.Sent, error)
	ReplyText(ctx context.Context, messageID, text string, inThread bool, uuid string) (feishu.Sent, error)
	ReplyCard(ctx context.Context, messageID string, card []byte, inThread bool, uuid string) (feishu.Sent, error)
	PatchCard(ctx context.Context, messageID string, card []byte) error
	AddReaction(ctx context.Context, messageID, emoji string) error
	UserName(ctx context.Context, openID string) (string, error)
	ChatInfo(ctx context.Context, chatID string) (feishu.Chat, error)
}

// Tracker is what the bot needs from Guance.
type Tracker interface {
	ListChannels(ctx context.Context) ([]guance.Channel, error)
	ListAllIssues(ctx context.Context, q guance.IssueQuery) ([]guance.Issue, error)
	ListIssues(ctx context.Context, q guance.IssueQuery) ([]guance.Issue, guance.PageInfo, error)
	GetIssue(ctx context.Context, issueUUID string) (*guance.Issue, error)
	SetStatus(ctx context.Context, issueUUID string, s guance.StatusType) (*guance.Issue, error)
	ListLevels(ctx context.Context) ([]guance.Level, error)
	CreateReply(ctx context.Context, issueUUID, content string) (*guance.Reply, error)
	ListReplies(ctx context.Context, issueUUID string, o guance.ReplyListOptions) ([]guance.Reply, guance.PageInfo, error)
}

// State is what the bot needs from the store: the parts below, each used by the files
// named beside it, and the job queues (package jobs).
type State interface {
	Kind() string
	Ping(ctx context.Context) error
	records
	marks
	claims
	cursors
	leases
	routes
	jobs.Store
	CountJobs(ctx context.Context, queue string) (int, error)
}

// records are the issue records (record.go, newcards.go, patches.go, watcher.go).
type records interface {
	PutIssue(ctx context.Context, is store.Issue) error
	AddCard(ctx context.Context, base store.Issue, c store.Card) (store.Issue, error)
	GetIssue(ctx context.Context, issueUUID string) (store.Issue, error)
	UpdateIssue(ctx context.Context, issueUUID string, fn func(*store.Issue) error) (store.Issue, error)
	ListIssues(ctx context.Context) ([]store.Issue, error)
	ListSummaries(ctx context.Context) ([]store.Summary, error)
	GetSummary(ctx context.Context, issueUUID string) (store.Summary, error)
	IssueByMessage(ctx context.Context, messageOrThreadID string) (store.Issue, error)
}

// routes send issues to chats; people set them from the chat (routes.go).
type routes interface {
	PutRoute(ctx context.Context, r store.Route) error
	DeleteRoute(ctx context.Context, chatID, channelUUID string) error
	Routes(ctx context.Context) ([]store.Route, error)
}

// marks remember what was seen: issues by the poller, replies by the watcher, and the
// replies the bot wrote itself (newissues.go, tochat.go, toguance.go).
type marks interface {
	MarkIssuesSeen(ctx context.Context, uuids ...string) error
	IssueSeen(ctx context.Context, uuid string) (bool, error)
	MarkRepliesSeen(ctx context.Context, issueUUID string, replyUUIDs ...string) error
	ReplySeen(ctx context.Context, issueUUID, replyUUID string) (bool, error)
	AddOwnReply(ctx context.Context, issueUUID, replyUUID string) error
	IsOwnReply(ctx context.Context, replyUUID string) (bool, error)
}

// claims deduplicate Feishu messages and synced replies (toguance.go, tochat.go).
type claims interface {
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	Claimed(ctx context.Context, key string) (bool, error)
	Release(ctx context.Context, key string) error
}

// cursors and meta are small facts kept across restarts: the poll cursor, the next
// budget turn, the channel's uuid, the API key's account (newissues.go, schedule.go).
type cursors interface {
	Cursor(ctx context.Context, name string) (int64, error)
	AdvanceCursor(ctx context.Context, name string, v int64) (int64, error)
	Meta(ctx context.Context, name string) (string, error)
	SetMeta(ctx context.Context, name, value string) error
	SetMetaFenced(ctx context.Context, lease string, term int64, name, value string) (bool, error)
}

// leases elect the one process that leads (leader.go).
type leases interface {
	AcquireLease(ctx context.Context, name string, h store.Holder, ttl time.Duration) (int64, error)
	ReleaseLease(ctx context.Context, name string, h store.Holder) error
}

// Config holds the bot's settings (a subset of the process configuration).
type Config struct {
	// ChatID is the default chat for issues not routed elsewhere.
	ChatID string
	// PollInterval is how often Guance is polled for new issues.
	PollInterval time.Duration
	// RateLimit is the Guance requests per minute the bot may spend; the poller paces
	// itself so that it never needs more.
	RateLimit int
	// BudgetWindow is the window RateLimit counts over; 0 means a minute (tests shrink it).
	BudgetWindow time.Duration
	// ConsoleURL is the Guance console base for "Open in Guance" links.
	ConsoleURL string
	// Channel is the name of the watched Guance channel; "" means "default" (all issues).
	Channel string
	// Overlap is how far before the newest createAt seen each poll looks again, to catch
	// issues that monitors and auto-discovery write late; 0 means 5 minutes.
	Overlap time.Duration
	// FirstLookback is how far back the very first poll looks; 0 means 1 hour.
	FirstLookback time.Duration
	// ClockSkew bounds the difference between Guance's clock and ours: list windows
	// reach that far past now, and that much further back than local time says; 0
	// means a minute.
	ClockSkew time.Duration
	// ChatSendInterval spaces messages into one chat (Feishu allows 5 per second per
	// chat, shared by all bots); 0 means 250 ms.
	ChatSendInterval time.Duration
	// RetryBase is the first delay before a failed card or reply is tried again; it
	// doubles per attempt (with jitter). 0 means 1 s.
	RetryBase time.Duration
	// Location is the time zone cards show times in; nil means time.Local.
	Location *time.Location
	// InstanceID names this replica in the poller lease, the same across its restarts, so
	// that a restarted process takes its own lease at once; "" means random.
	InstanceID string
	// StormThreshold is how many new issues one chat takes within a budget window (a
	// minute) before the next ones go into one storm digest; 0 turns digests off.
	StormThreshold int
	// QuietAfter is how long a resolved or closed issue stays watched for replies after
	// its last change or chat activity; 0 means 24 hours.
	QuietAfter time.Duration
	// Budget, when set, reports the Guance limiter's use for the status command.
	Budget func() guance.LimiterStats
	// SharedHints is set when Guance's webhook is served (GUANCE_WEBHOOK_TOKEN, on every
	// replica) and replicas share the store (Redis): the leader then looks for hooks
	// the others took. Its own hooks wake it directly.
	SharedHints bool
}

// Bot is the application. Build it with New, hand it to a feishu.Intake as the event
// Handler, and run Run.
type Bot struct {
	cfg     Config
	feishu  Messenger
	guance  Tracker
	state   State
	metrics *Metrics
	logger  *slog.Logger
	now     func() time.Time

	incarnation string       // this process in the poller lease: its start time, then random
	term        atomic.Int64 // the poller lease term while this replica leads, else 0

	botOpenID atomic.Pointer[string] // set once Run has learnt it
	keyID     atomic.Pointer[string] // the Guance API key's account id (wsak_…), once seen

	// The durable queues, all run by one engine (package jobs).
	cards      *jobs.Queue[cardJob]
	replies    *jobs.Queue[replyJob]
	thread     *jobs.Queue[threadJob]
	held       *jobs.Queue[threadJob]
	status     *jobs.Queue[statusJob]
	patches    *jobs.Queue[patchJob]
	answers    *jobs.Queue[answerJob]
	pacer      *chatPacer
	patchClock patchClock
	watch      watcher
	hintWake   chan struct{} // a hook named an issue (see waitTurn)
	lastPoll   atomic.Int64  // unix ns of the last successful poll
	// pollFrom is where the last successful poll's window began (unix s): issues created
	// since are observed by every poll, status and updateAt included.
	pollFrom    atomic.Int64
	levels      levelCache
	channelMu   sync.Mutex
	channelUUID string
	chats       chatCache
	storm       storms

	// afterSend, when set (tests only), runs after a card was sent and before it is
	// recorded; an error abandons the job there, as a crash would.
	afterSend func(issueUUID string) error
	// afterReply, likewise, runs after Guance accepted a reply and before it is recorded.
	afterReply func(messageID string) error
	// afterThreadPost, likewise, runs after Feishu accepted a Guance reply's thread post
	// and before it is recorded.
	afterThreadPost func(replyUUID string) error
}

// New returns a Bot. logger nil discards logs; metrics nil uses a private registry.
func New(cfg Config, fs Messenger, gc Tracker, st State, metrics *Metrics, logger *slog.Logger) *Bot {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	if cfg.Channel == "" {
		cfg.Channel = guance.DefaultChannelName
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = 5 * time.Minute
	}
	if cfg.FirstLookback <= 0 {
		cfg.FirstLookback = time.Hour
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Second
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 18
	}
	if cfg.BudgetWindow <= 0 {
		cfg.BudgetWindow = time.Minute
	}
	if cfg.ChatSendInterval <= 0 {
		cfg.ChatSendInterval = 250 * time.Millisecond
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.QuietAfter <= 0 {
		cfg.QuietAfter = 24 * time.Hour
	}
	if cfg.InstanceID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.InstanceID = hex.EncodeToString(b[:])
	}
	var inc [4]byte
	_, _ = rand.Read(inc[:])
	b := &Bot{
		cfg: cfg, feishu: fs, guance: gc, state: st, metrics: metrics,
		incarnation: fmt.Sprintf("%016x-%s", time.Now().UnixNano(), hex.EncodeToString(inc[:])),
		logger:      logger.With("component", "bot"),
		now:         time.Now,
		hintWake:    make(chan struct{}, 1),
	}
	b.pacer = newChatPacer(cfg.ChatSendInterval, func() time.Time { return b.now() })
	b.newQueues()
	return b
}

// Run does the bot's background work until ctx is done: it learns the bot's own
// Feishu identity, and — while this replica holds the poller lease — polls Guance for
// new issues and delivers their cards. It returns nil when ctx ends, after the work in
// hand is finished.
func (b *Bot) Run(ctx context.Context) error {
	b.logger.Info("bot starting", "store", b.state.Kind(), "chat_id", b.cfg.ChatID,
		"poll_interval", b.cfg.PollInterval, "instance", b.cfg.InstanceID)
	if b.cfg.ChatID == "" {
		b.logger.Warn("FEISHU_CHAT_ID is empty: new issues have no chat to go to")
	}
	b.refreshRouteCount(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { b.learnIdentity(gctx); return nil })
	g.Go(func() error { return b.runLeader(gctx) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// learnIdentity fetches the bot's open_id, retrying while Feishu is unreachable.
func (b *Bot) learnIdentity(ctx context.Context) {
	err := retry(ctx, b.logger, "learn bot identity", func() (bool, error) {
		id, err := b.feishu.BotOpenID(ctx)
		if err != nil {
			return feishu.Retryable(ctx, err), err
		}
		b.botOpenID.Store(&id)
		b.logger.Info("bot identity known", "bot_open_id", id)
		return false, nil
	})
	if err != nil && ctx.Err() == nil {
		b.logger.Error("cannot learn the bot's identity", "err", err)
	}
}

// botID returns the bot's own open_id, or "" while it is not known yet.
func (b *Bot) botID() string {
	if p := b.botOpenID.Load(); p != nil {
		return *p
	}
	return ""
}

// retry runs fn until it succeeds, says not to retry, or ctx ends, backing off
// exponentially from 1 s to 1 min with jitter.
func retry(ctx context.Context, logger *slog.Logger, what string, fn func() (again bool, err error)) error {
	bo := newBackoff(time.Second, time.Minute)
	for {
		again, err := fn()
		if err == nil || !again {
			return err
		}
		d := bo.next()
		logger.Warn("retrying after error", "what", what, "in", d, "err", err)
		if !sleepCtx(ctx, d) {
			return ctx.Err()
		}
	}
}

// sleepCtx waits for d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
