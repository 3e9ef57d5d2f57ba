package feishu

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
	larkevent "github.com/larksuite/oapi-sdk-go/v3/event"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher"
	"github.com/larksuite/oapi-sdk-go/v3/event/dispatcher/callback"
	larkws "github.com/larksuite/oapi-sdk-go/v3/ws"
)

// Intake modes.
const (
	ModeWS   = "ws"   // long connection: no public URL needed
	ModeHTTP = "http" // Feishu POSTs signed, encrypted events to the bot
)

// Event types the intake subscribes to. Over the long connection an event type without
// a handler is acked with code 500 and redelivered, so every type the README asks to
// subscribe has one.
const (
	eventMessageReceive = "im.message.receive_v1"
	eventBotAdded       = "im.chat.member.bot.added_v1"
	eventBotRemoved     = "im.chat.member.bot.deleted_v1"
	eventChatDisbanded  = "im.chat.disbanded_v1"
	eventMessageRead    = "im.message.message_read_v1"
)

// maxEventBody bounds one HTTP event body.
const maxEventBody = 1 << 20

// IntakeConfig configures event intake.
type IntakeConfig struct {
	AppID, AppSecret string
	// BaseURL is the Open Platform base; the long connection's endpoint lives there.
	BaseURL string
	// Mode is ModeWS (default) or ModeHTTP.
	Mode string
	// VerificationToken and EncryptKey are the console's event security settings;
	// ModeHTTP requires EncryptKey (without it events are not authenticated at all).
	VerificationToken, EncryptKey string
	// MaxSkew is how old (or how far in the future) a signed HTTP event may be; 0 means 5 min.
	MaxSkew time.Duration
	// Logger receives intake logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Intake receives Feishu events and card callbacks, over the long connection or over
// signed HTTP, and hands them decoded to one Handler.
type Intake struct {
	cfg       IntakeConfig
	h         Handler
	logger    *slog.Logger
	d         *dispatcher.EventDispatcher
	ws        *larkws.Client
	connected atomic.Bool
	malformed atomic.Int64
}

// NewIntake builds an Intake that delivers to h.
func NewIntake(cfg IntakeConfig, h Handler) (*Intake, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeWS
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Mode {
	case ModeWS:
		if cfg.AppID == "" || cfg.AppSecret == "" {
			return nil, errors.New("feishu: intake: app id and app secret are required for the long connection")
		}
	case ModeHTTP:
		if cfg.EncryptKey == "" {
			return nil, errors.New("feishu: intake: http mode requires an encrypt key")
		}
	default:
		return nil, fmt.Errorf("feishu: intake: unknown mode %q (want ws or http)", cfg.Mode)
	}
	in := &Intake{cfg: cfg, h: h, logger: cfg.Logger.With("component", "feishu-intake", "mode", cfg.Mode)}
	sdkLog := sdkLogger{cfg.Logger.With("component", "feishu-sdk")}

	vt, ek := "", ""
	if cfg.Mode == ModeHTTP {
		vt, ek = cfg.VerificationToken, cfg.EncryptKey
	}
	in.d = dispatcher.NewEventDispatcher(vt, ek)
	in.d.InitConfig(larkevent.WithLogger(sdkLog), larkevent.WithLogLevel(larkcore.LogLevelWarn))
	// Events are registered raw and decoded here, so that a malformed body is logged
	// and acknowledged instead of being redelivered for hours.
	in.d.OnCustomizedEvent(eventMessageReceive, in.onMessage)
	in.d.OnCustomizedEvent(eventBotAdded, in.onChatEvent(h.HandleBotAdded))
	in.d.OnCustomizedEvent(eventBotRemoved, in.onChatEvent(h.HandleBotRemoved))
	in.d.OnCustomizedEvent(eventChatDisbanded, in.onChatEvent(func(ctx context.Context, e ChatEvent) error {
		e.Disbanded = true
		return h.HandleBotRemoved(ctx, e)
	}))
	in.d.OnCustomizedEvent(eventMessageRead, func(context.Context, *larkevent.EventReq) error { return nil })
	in.d.OnP2CardActionTrigger(in.onCardAction)

	if cfg.Mode == ModeWS {
		opts := []larkws.ClientOption{
			larkws.WithEventHandler(in.d),
			larkws.WithDomain(strings.TrimRight(cfg.BaseURL, "/")),
			larkws.WithLogger(sdkLog),
			larkws.WithLogLevel(larkcore.LogLevelInfo),
			larkws.WithHttpClient(&http.Client{Timeout: 10 * time.Second}),
			larkws.WithAutoReconnect(true),
			larkws.WithOnReady(func() { in.setConnected(true) }),
			larkws.WithOnReconnected(func() { in.setConnected(true) }),
			larkws.WithOnReconnecting(func() { in.setConnected(false) }),
			larkws.WithOnDisconnected(func() { in.setConnected(false) }),
			larkws.WithOnError(func(err error) {
				in.logger.Warn("long connection error", "err", err)
			}),
		}
		in.ws = larkws.NewClient(cfg.AppID, cfg.AppSecret, opts...)
	}
	return in, nil
}

func (in *Intake) setConnected(v bool) {
	if in.connected.Swap(v) != v {
		if v {
			in.logger.Info("feishu intake connected")
		} else {
			in.logger.Warn("feishu intake disconnected")
		}
	}
}

// Ready reports whether events can arrive: the long connection is up, or (http mode)
// Run is serving.
func (in *Intake) Ready() bool { return in.connected.Load() }

// Malformed returns how many malformed events were logged and acknowledged.
func (in *Intake) Malformed() int64 { return in.malformed.Load() }

// Run takes events in until ctx is done. In ws mode it holds the long connection
// (reconnecting as needed) and returns a non-nil error only if the connection cannot
// be established for good (bad credentials); in http mode events arrive through
// ServeHTTP and Run only marks the intake ready.
func (in *Intake) Run(ctx context.Context) error {
	if in.cfg.Mode == ModeHTTP {
		in.setConnected(true)
		<-ctx.Done()
		in.setConnected(false)
		return nil
	}
	err := in.ws.Start(ctx)
	in.setConnected(false)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("feishu: long connection: %w", err)
	}
	return nil
}

// plainBody returns an event's JSON. Handlers registered raw get the request as it
// came: over HTTP that is still the encrypted envelope (the SDK decrypts only for
// typed handlers), over the long connection it is plain.
func (in *Intake) plainBody(body []byte) []byte {
	if in.cfg.Mode != ModeHTTP {
		return body
	}
	var env struct {
		Encrypt string `json:"encrypt"`
	}
	if json.Unmarshal(body, &env) != nil || env.Encrypt == "" {
		return body
	}
	plain, err := larkevent.EventDecrypt(env.Encrypt, in.cfg.EncryptKey)
	if err != nil {
		return nil
	}
	return plain
}

func (in *Intake) onMessage(ctx context.Context, req *larkevent.EventReq) error {
	m, ok := decodeMessage(in.plainBody(req.Body))
	if !ok {
		in.malformed.Add(1)
		in.logger.WarnContext(ctx, "malformed message event acknowledged", "bytes", len(req.Body))
		return nil
	}
	return in.h.HandleMessage(ctx, m)
}

func (in *Intake) onChatEvent(fn func(context.Context, ChatEvent) error) func(context.Context, *larkevent.EventReq) error {
	return func(ctx context.Context, req *larkevent.EventReq) error {
		e, ok := decodeChatEvent(in.plainBody(req.Body))
		if !ok {
			in.malformed.Add(1)
			in.logger.WarnContext(ctx, "malformed chat event acknowledged", "bytes", len(req.Body))
			return nil
		}
		return fn(ctx, e)
	}
}

func (in *Intake) onCardAction(ctx context.Context, e *callback.CardActionTriggerEvent) (*callback.CardActionTriggerResponse, error) {
	a, ok := cardAction(e)
	if !ok {
		in.malformed.Add(1)
		in.logger.WarnContext(ctx, "malformed card callback acknowledged")
		return &callback.CardActionTriggerResponse{}, nil
	}
	resp, err := in.h.HandleCardAction(ctx, a)
	if err != nil {
		return nil, err
	}
	return callbackResponse(resp), nil
}

// ServeHTTP serves POST /feishu/events in http mode. Before the SDK sees a request it
// checks what the SDK does not: the body is encrypted, the signature matches (in
// constant time), and the timestamp is within MaxSkew — so a forged, replayed or
// unencrypted request is refused with 401/400 and reaches no handler.
func (in *Intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if in.cfg.Mode != ModeHTTP {
		http.Error(w, "event intake is not in http mode", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEventBody+1))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if len(body) > maxEventBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	var env struct {
		Encrypt string `json:"encrypt"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		in.logger.Warn("refused unencrypted or malformed event request", "remote", r.RemoteAddr)
		http.Error(w, "encrypted body required", http.StatusBadRequest)
		return
	}
	sig := r.Header.Get(larkevent.EventSignature)
	if sig == "" {
		// Feishu signs every event; only a url_verification challenge (which answers
		// nothing but the challenge, after the SDK checks the verification token) may
		// arrive unsigned.
		if !in.isChallenge(env.Encrypt) {
			in.logger.Warn("refused unsigned event request", "remote", r.RemoteAddr)
			http.Error(w, "signature required", http.StatusUnauthorized)
			return
		}
	} else {
		ts := r.Header.Get(larkevent.EventRequestTimestamp)
		nonce := r.Header.Get(larkevent.EventRequestNonce)
		if !validSignature(sig, ts, nonce, in.cfg.EncryptKey, body) {
			in.logger.Warn("refused event request with a bad signature", "remote", r.RemoteAddr)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if !in.fresh(ts) {
			in.logger.Warn("refused stale event request", "remote", r.RemoteAddr, "timestamp", ts)
			http.Error(w, "stale request", http.StatusUnauthorized)
			return
		}
	}
	resp := in.d.Handle(r.Context(), &larkevent.EventReq{
		Header: r.Header, Body: body, RequestURI: r.RequestURI,
	})
	// Headers go before WriteHeader (the SDK's own writer gets this wrong: oapi-sdk-go#110).
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(resp.Body)
}

func (in *Intake) isChallenge(encrypted string) bool {
	plain, err := larkevent.EventDecrypt(encrypted, in.cfg.EncryptKey)
	if err != nil {
		return false
	}
	var v struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(plain, &v) == nil && v.Type == "url_verification"
}

func (in *Intake) fresh(ts string) bool {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	d := in.cfg.Now().Sub(time.Unix(sec, 0))
	return d <= in.cfg.MaxSkew && d >= -in.cfg.MaxSkew
}

// validSignature checks X-Lark-Signature = hex(sha256(timestamp + nonce + encryptKey + body)).
func validSignature(sig, ts, nonce, key string, body []byte) bool {
	h := sha256.New()
	h.Write([]byte(ts))
	h.Write([]byte(nonce))
	h.Write([]byte(key))
	h.Write(body)
	want := hex.EncodeToString(h.Sum(nil))
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(sig)), []byte(want)) == 1
}
