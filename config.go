package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config is the environment-variable contract of PRODUCT.md §2. Secrets carry the
// `unset` option so they leave the process environment once read.
type Config struct {
	FeishuAppID             string        `env:"FEISHU_APP_ID,required,notEmpty"`
	FeishuAppSecret         string        `env:"FEISHU_APP_SECRET,required,notEmpty,unset"`
	FeishuBaseURL           string        `env:"FEISHU_BASE_URL" envDefault:"https://open.feishu.cn"`
	FeishuEventMode         string        `env:"FEISHU_EVENT_MODE" envDefault:"ws"`
	FeishuVerificationToken string        `env:"FEISHU_VERIFICATION_TOKEN,unset"`
	FeishuEncryptKey        string        `env:"FEISHU_ENCRYPT_KEY,unset"`
	FeishuChatID            string        `env:"FEISHU_CHAT_ID"`
	GuanceAPIKey            string        `env:"GUANCE_API_KEY,required,notEmpty,unset"`
	GuanceBaseURL           string        `env:"GUANCE_BASE_URL" envDefault:"https://openapi.guance.com"`
	GuanceConsoleURL        string        `env:"GUANCE_CONSOLE_URL" envDefault:"https://console.guance.com"`
	GuanceRateLimit         int           `env:"GUANCE_RATE_LIMIT" envDefault:"18"`
	GuanceWebhookToken      string        `env:"GUANCE_WEBHOOK_TOKEN,unset"`
	PollInterval            time.Duration `env:"POLL_INTERVAL" envDefault:"10s"`
	QuietAfter              time.Duration `env:"QUIET_AFTER" envDefault:"24h"`
	StormThreshold          int           `env:"STORM_THRESHOLD" envDefault:"10"`
	HTTPAddr                string        `env:"HTTP_ADDR" envDefault:":8080"`
	RedisURL                string        `env:"REDIS_URL,unset"`
	DataDir                 string        `env:"DATA_DIR" envDefault:"./data"`
	InstanceID              string        `env:"INSTANCE_ID"`
	LogLevel                string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat               string        `env:"LOG_FORMAT" envDefault:"json"`
}

// ConfigError lists every bad variable found at start.
type ConfigError struct {
	Problems []string // each names its variable first
}

func (e *ConfigError) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// parseConfig reads the configuration from environ (KEY=VALUE pairs, as os.Environ).
// It reports every bad variable at once in a *ConfigError.
func parseConfig(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: vars})
	var problems []string
	bad := map[string]bool{}
	if err != nil {
		var agg env.AggregateError
		if !errors.As(err, &agg) {
			return cfg, fmt.Errorf("parse configuration: %w", err)
		}
		for _, e := range agg.Errors {
			key, msg := describeEnvError(e)
			bad[key] = true
			problems = append(problems, key+": "+msg)
		}
	}
	check := func(key string, ok bool, msg string) {
		if !ok && !bad[key] {
			bad[key] = true
			problems = append(problems, key+": "+msg)
		}
	}
	check("FEISHU_EVENT_MODE", cfg.FeishuEventMode == "ws" || cfg.FeishuEventMode == "http",
		fmt.Sprintf("must be ws or http, not %q", cfg.FeishuEventMode))
	if cfg.FeishuEventMode == "http" {
		check("FEISHU_ENCRYPT_KEY", cfg.FeishuEncryptKey != "",
			"required in http mode: without an encrypt key Feishu events cannot be authenticated")
		check("FEISHU_VERIFICATION_TOKEN", cfg.FeishuVerificationToken != "", "required in http mode")
	}
	check("FEISHU_BASE_URL", validBaseURL(cfg.FeishuBaseURL), "must be an http(s) URL such as https://open.feishu.cn")
	check("GUANCE_BASE_URL", validBaseURL(cfg.GuanceBaseURL), "must be an http(s) URL such as https://openapi.guance.com")
	check("GUANCE_CONSOLE_URL", validBaseURL(cfg.GuanceConsoleURL), "must be an http(s) URL such as https://console.guance.com")
	check("FEISHU_CHAT_ID", cfg.FeishuChatID == "" || strings.HasPrefix(cfg.FeishuChatID, "oc_"),
		"must be a chat id starting with oc_")
	check("GUANCE_RATE_LIMIT", cfg.GuanceRateLimit >= 1 && cfg.GuanceRateLimit <= 200,
		"must be between 1 and 200 requests per minute (Guance allows 20 per key)")
	check("POLL_INTERVAL", cfg.PollInterval >= time.Second && cfg.PollInterval <= time.Hour,
		"must be between 1s and 1h")
	check("QUIET_AFTER", cfg.QuietAfter >= time.Minute && cfg.QuietAfter <= 90*24*time.Hour,
		"must be between 1m and 2160h (90 days)")
	check("HTTP_ADDR", cfg.HTTPAddr != "", "must not be empty")
	check("GUANCE_WEBHOOK_TOKEN", cfg.GuanceWebhookToken == "" || len(cfg.GuanceWebhookToken) >= 16,
		"must be at least 16 characters (it is all that guards /guance/webhook), or empty to turn the webhook off")
	check("STORM_THRESHOLD", cfg.StormThreshold >= 0 && cfg.StormThreshold <= 10000,
		"must be between 0 (no storm digests) and 10000 new issues a minute per chat")
	check("REDIS_URL", cfg.RedisURL == "" || strings.HasPrefix(cfg.RedisURL, "redis://") || strings.HasPrefix(cfg.RedisURL, "rediss://"),
		"must start with redis:// or rediss://")
	check("DATA_DIR", cfg.RedisURL != "" || cfg.DataDir != "", "must not be empty when REDIS_URL is empty")
	_, lvlErr := parseLevel(cfg.LogLevel)
	check("LOG_LEVEL", lvlErr == nil, "must be debug, info, warn or error")
	check("LOG_FORMAT", cfg.LogFormat == "json" || cfg.LogFormat == "text", "must be json or text")
	if cfg.InstanceID == "" {
		// The host name is stable across restarts of one replica (a pod or a container keeps
		// it), which lets a restarted process take its own lease at once.
		cfg.InstanceID, _ = os.Hostname()
	}
	check("INSTANCE_ID", cfg.InstanceID != "" && !strings.ContainsRune(cfg.InstanceID, 0),
		"must be set when the host name is unknown")
	if len(problems) > 0 {
		return cfg, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// describeEnvError names the variable behind one of env's errors. Its messages are
// rewritten so that no value (which might be a secret) is echoed.
func describeEnvError(err error) (key, msg string) {
	var (
		notSet env.VarIsNotSetError
		empty  env.EmptyVarError
		parse  env.ParseError
	)
	switch {
	case errors.As(err, &notSet):
		return notSet.Key, "required but not set"
	case errors.As(err, &empty):
		return empty.Key, "required but empty"
	case errors.As(err, &parse):
		key := envKey(parse.Name)
		switch parse.Type {
		case reflect.TypeOf(time.Duration(0)):
			return key, "not a duration (use e.g. 10s or 1m)"
		case reflect.TypeOf(0):
			return key, "not a whole number"
		}
		return key, "malformed value"
	}
	return "configuration", err.Error()
}

// envKey returns the variable name of a Config field.
func envKey(field string) string {
	f, ok := reflect.TypeOf(Config{}).FieldByName(field)
	if !ok {
		return field
	}
	key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return key
}

func validBaseURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}
