// Package bot is issuebot's application: it takes Feishu events and card callbacks,
// talks to Guance through package guance, keeps its state in package store, and
// speaks to Feishu through package bot/feishu. Flows (new issue → card, thread reply →
// Guance reply, Guance changes → thread and card, buttons) live in one file each.
package bot

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"issuebot/bot/feishu"
	"issuebot/guance"
)

// Messenger is what the bot needs from Feishu.
type Messenger interface {
	BotOpenID(ctx context.Context) (string, error)
}

// Tracker is what the bot needs from Guance.
type Tracker interface {
	ListChannels(ctx context.Context) ([]guance.Channel, error)
}

// State is what the bot needs from the store.
type State interface {
	Kind() string
	Ping(ctx context.Context) error
}

// Config holds the bot's settings (a subset of the process configuration).
type Config struct {
	// ChatID is the default chat for issues not routed elsewhere.
	ChatID string
	// PollInterval is how often Guance is polled.
	PollInterval time.Duration
	// ConsoleURL is the Guance console base for "Open in Guance" links.
	ConsoleURL string
}

// Bot is the application. Build it with New, then hand it to a feishu.Intake as the
// event Handler and run Run.
type Bot struct {
	cfg     Config
	feishu  Messenger
	guance  Tracker
	state   State
	metrics *Metrics
	logger  *slog.Logger
	now     func() time.Time

	botOpenID atomic.Pointer[string] // set once Run has learnt it
}

// New returns a Bot. logger nil discards logs; metrics nil uses a private registry.
func New(cfg Config, fs Messenger, gc Tracker, st State, metrics *Metrics, logger *slog.Logger) *Bot {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Bot{
		cfg: cfg, feishu: fs, guance: gc, state: st, metrics: metrics,
		logger: logger.With("component", "bot"),
		now:    time.Now,
	}
}

// Run does the bot's background work until ctx is done: it learns the bot's own
// Feishu identity and checks the Guance key, retrying with backoff while either
// platform is unreachable. It returns nil when ctx ends.
func (b *Bot) Run(ctx context.Context) error {
	b.logger.Info("bot starting", "store", b.state.Kind(), "chat_id", b.cfg.ChatID, "poll_interval", b.cfg.PollInterval)
	if b.cfg.ChatID == "" {
		b.logger.Warn("FEISHU_CHAT_ID is empty: issues go only to chats bound with the bind command")
	}
	var openID string
	err := retry(ctx, b.logger, "learn bot identity", func() (bool, error) {
		id, err := b.feishu.BotOpenID(ctx)
		if err != nil {
			return feishu.Retryable(ctx, err), err
		}
		openID = id
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	b.botOpenID.Store(&openID)
	b.logger.Info("bot identity known", "bot_open_id", openID)

	err = retry(ctx, b.logger, "check guance key", func() (bool, error) {
		chans, err := b.guance.ListChannels(ctx)
		if err != nil {
			if errors.Is(err, guance.ErrBadKey) {
				b.logger.Error("Guance refused GUANCE_API_KEY; issues cannot be read until it is fixed", "err", err)
				return false, nil
			}
			return guance.Retryable(err), err
		}
		b.logger.Info("guance reachable", "channels", len(chans))
		return false, nil
	})
	if err != nil && ctx.Err() == nil {
		b.logger.Error("guance check gave up", "err", err)
	}
	<-ctx.Done()
	return nil
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
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
