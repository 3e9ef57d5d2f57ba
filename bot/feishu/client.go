// Package feishu is issuebot's thin adapter over the Feishu (Lark) Open Platform SDK
// (github.com/larksuite/oapi-sdk-go/v3): it sends, replies to and patches messages,
// adds reactions, looks up names and the bot's identity, and takes events in over the
// long connection or signed HTTP. SDK types stay inside this package; callers see
// plain Go values and one typed *Error.
package feishu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	lark "github.com/larksuite/oapi-sdk-go/v3"
	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
)

// DefaultBaseURL is the Feishu Open Platform; Lark uses https://open.larksuite.com.
const DefaultBaseURL = "https://open.feishu.cn"

// Config holds what the adapter needs to talk to Feishu.
type Config struct {
	AppID     string
	AppSecret string
	// BaseURL is the Open Platform base, used for REST and the long connection.
	BaseURL string
	// Timeout bounds one HTTP exchange; 0 means 10 s.
	Timeout time.Duration
	// Logger receives the adapter's and the SDK's logs; nil discards them.
	Logger *slog.Logger
	// NameTTL is how long a looked-up user name is cached; 0 means 1 h.
	NameTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Client is the Feishu REST adapter. It is safe for concurrent use.
type Client struct {
	sdk     *lark.Client
	appID   string
	secret  string
	logger  *slog.Logger
	now     func() time.Time
	nameTTL time.Duration

	tokMu     sync.Mutex
	token     string
	tokenExp  time.Time
	tokenGets int

	namesMu sync.Mutex
	names   map[string]cachedName

	botMu     sync.Mutex
	botOpenID string
}

type cachedName struct {
	name    string
	err     error // a refusal, remembered briefly
	expires time.Time
}

// NewClient returns a Client for cfg. It makes no request.
func NewClient(cfg Config) (*Client, error) {
	if cfg.AppID == "" || cfg.AppSecret == "" {
		return nil, fmt.Errorf("feishu: app id and app secret are required")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.NameTTL <= 0 {
		cfg.NameTTL = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		appID:   cfg.AppID,
		secret:  cfg.AppSecret,
		logger:  logger,
		now:     cfg.Now,
		nameTTL: cfg.NameTTL,
		names:   make(map[string]cachedName),
	}
	// The SDK's token cache is process-global, keyed without the base URL, and retries
	// a refused token with the same cached token (reference/feishu.md §1). The adapter
	// therefore owns the tenant token and passes it explicitly on every call.
	c.sdk = lark.NewClient(cfg.AppID, cfg.AppSecret,
		lark.WithOpenBaseUrl(strings.TrimRight(cfg.BaseURL, "/")),
		lark.WithEnableTokenCache(false),
		lark.WithHttpClient(&transport{hc: &http.Client{Timeout: cfg.Timeout}}),
		lark.WithLogger(sdkLogger{logger.With("component", "feishu-sdk")}),
		lark.WithLogLevel(larkcore.LogLevelWarn),
	)
	return c, nil
}

// tenantToken returns a cached tenant access token, fetching one when none is cached
// or the cached one expires within 3 minutes.
func (c *Client) tenantToken(ctx context.Context) (string, error) {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.token != "" && c.now().Before(c.tokenExp.Add(-3*time.Minute)) {
		return c.token, nil
	}
	resp, err := c.sdk.GetTenantAccessTokenBySelfBuiltApp(ctx, &larkcore.SelfBuiltTenantAccessTokenReq{
		AppID: c.appID, AppSecret: c.secret,
	})
	if err != nil {
		return "", fmt.Errorf("feishu: get tenant access token: %w", err)
	}
	if resp.Code != 0 {
		return "", apiError("get tenant access token", resp.ApiResp, resp.Code, resp.Msg)
	}
	if resp.TenantAccessToken == "" {
		return "", &Error{Op: "get tenant access token", Msg: "empty token in answer"}
	}
	expire := time.Duration(resp.Expire) * time.Second
	if expire <= 0 {
		expire = 2 * time.Hour
	}
	c.token, c.tokenExp = resp.TenantAccessToken, c.now().Add(expire)
	c.tokenGets++
	return c.token, nil
}

// dropToken forgets tok if it is still the cached token.
func (c *Client) dropToken(tok string) {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.token == tok {
		c.token = ""
	}
}

// call runs fn with a tenant token; when Feishu refuses the token as invalid it drops
// it, fetches a fresh one and runs fn once more. fn reports the body's code and msg.
func (c *Client) call(ctx context.Context, op string, fn func(opt larkcore.RequestOptionFunc) (*larkcore.ApiResp, int, string, error)) error {
	for attempt := 0; ; attempt++ {
		tok, err := c.tenantToken(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		resp, code, msg, err := fn(larkcore.WithTenantAccessToken(tok))
		if err != nil {
			return fmt.Errorf("feishu: %s: %w", op, err)
		}
		if code == 0 {
			return nil
		}
		e := apiError(op, resp, code, msg)
		if e.TokenInvalid() && attempt == 0 {
			c.logger.WarnContext(ctx, "feishu refused the tenant token; fetching a new one", "op", op, "code", code)
			c.dropToken(tok)
			continue
		}
		return e
	}
}

// transport is the SDK's HTTP client. It turns answers that are not JSON (proxies'
// HTML error pages) into a *statusError the SDK passes through, instead of the SDK's
// undecodable "content-type not json" error that loses the status.
type transport struct{ hc *http.Client }

func (t *transport) Do(r *http.Request) (*http.Response, error) {
	resp, err := t.hc.Do(r)
	if err != nil {
		return nil, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/json" || resp.StatusCode < 300 {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return nil, &statusError{status: resp.StatusCode, retryAfter: retryAfterHeader(resp.Header)}
}

// sdkLogger forwards the SDK's logs to slog.
type sdkLogger struct{ l *slog.Logger }

// Debug drops the SDK's debug lines: they carry whole event payloads, verification
// token included.
func (s sdkLogger) Debug(context.Context, ...interface{}) {}
func (s sdkLogger) Info(ctx context.Context, args ...interface{}) {
	s.l.InfoContext(ctx, fmt.Sprint(args...))
}
func (s sdkLogger) Warn(ctx context.Context, args ...interface{}) {
	s.l.WarnContext(ctx, fmt.Sprint(args...))
}
func (s sdkLogger) Error(ctx context.Context, args ...interface{}) {
	s.l.ErrorContext(ctx, fmt.Sprint(args...))
}
