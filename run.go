package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"issuebot/bot"
	"issuebot/bot/feishu"
	"issuebot/guance"
	"issuebot/store"
)

// run builds every part from the environment and runs them until ctx is done, then
// shuts down in order: stop taking events, let in-flight work finish, close the store.
func run(ctx context.Context, environ []string, stdout io.Writer) error {
	cfg, err := parseConfig(environ)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stdout)
	store.SetRedisLogger(logger.With("component", "redis"))

	st, err := store.Open(ctx, cfg.RedisURL, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Error("close store", "err", err)
		}
	}()

	metrics := bot.NewMetrics(nil)
	// One budget for the key: people's writes keep a reserve that background work
	// never spends. The window is kept in the store, so replicas sharing Redis share it
	// and a restarted process knows what its predecessor spent. While the store cannot
	// be asked, no Guance request goes out (the limiter fails closed): a replica counting
	// on its own would spend what the others count on.
	limiter := guance.NewWindowLimiter(cfg.GuanceRateLimit, time.Minute,
		guance.WithReserve(bot.Reserve(cfg.GuanceRateLimit)),
		guance.WithSharedWindow(rateSlots{st: st, name: "guance", window: time.Minute}))
	gc, err := guance.NewClient(cfg.GuanceBaseURL, cfg.GuanceAPIKey,
		guance.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: metrics.InstrumentGuance(nil)}),
		guance.WithLimiter(limiter),
		guance.WithLogger(logger.With("component", "guance")),
		guance.WithOnThrottle(metrics.GuanceThrottled),
	)
	if err != nil {
		return fmt.Errorf("build guance client: %w", err)
	}
	fc, err := feishu.NewClient(feishu.Config{
		AppID: cfg.FeishuAppID, AppSecret: cfg.FeishuAppSecret, BaseURL: cfg.FeishuBaseURL,
		Logger: logger.With("component", "feishu"),
	})
	if err != nil {
		return fmt.Errorf("build feishu client: %w", err)
	}
	b := bot.New(bot.Config{
		ChatID: cfg.FeishuChatID, PollInterval: cfg.PollInterval, RateLimit: cfg.GuanceRateLimit,
		ConsoleURL: cfg.GuanceConsoleURL, QuietAfter: cfg.QuietAfter, Budget: limiter.Stats,
		InstanceID: cfg.InstanceID, StormThreshold: cfg.StormThreshold, SharedHints: cfg.GuanceWebhookToken != "" && st.Kind() == "redis",
	}, fc, gc, st, metrics, logger)
	intake, err := feishu.NewIntake(feishu.IntakeConfig{
		AppID: cfg.FeishuAppID, AppSecret: cfg.FeishuAppSecret, BaseURL: cfg.FeishuBaseURL,
		Mode: cfg.FeishuEventMode, VerificationToken: cfg.FeishuVerificationToken, EncryptKey: cfg.FeishuEncryptKey,
		Logger: logger,
	}, b)
	if err != nil {
		return fmt.Errorf("build feishu intake: %w", err)
	}

	probes := bot.Probes{Store: st, IntakeReady: intake.Ready}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", probes.Healthz)
	mux.HandleFunc("GET /readyz", probes.Readyz)
	mux.Handle("GET /metrics", metrics.Handler())
	if cfg.FeishuEventMode == feishu.ModeHTTP {
		mux.Handle("POST /feishu/events", intake)
	}
	if cfg.GuanceWebhookToken != "" {
		mux.Handle("POST /guance/webhook", b.GuanceWebhook(cfg.GuanceWebhookToken))
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	logger.Info("issuebot started", "http_addr", ln.Addr().String(), "event_mode", cfg.FeishuEventMode, "store", st.Kind())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Stop accepting events first; requests in flight get 10 s to finish.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { return intake.Run(gctx) })
	g.Go(func() error { return b.Run(gctx) })
	err = g.Wait()
	logger.Info("issuebot stopped")
	return err
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel) // validated by parseConfig
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// rateSlots lets the Guance limiter count against a window kept in the store, shared
// by every replica that uses the same key.
type rateSlots struct {
	st interface {
		TakeRateSlot(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error)
	}
	name   string
	window time.Duration
}

// TakeSlot implements guance.SharedWindow.
func (r rateSlots) TakeSlot(ctx context.Context, limit int) (time.Duration, error) {
	return r.st.TakeRateSlot(ctx, r.name, limit, r.window)
}
