package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func requiredEnv(extra ...string) []string {
	return append([]string{
		"FEISHU_APP_ID=cli_test",
		"FEISHU_APP_SECRET=app-secret-XYZ",
		"GUANCE_API_KEY=guance-key-XYZ",
	}, extra...)
}

func TestParseConfigDefaults(t *testing.T) {
	got, err := parseConfig(requiredEnv())
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	host, _ := os.Hostname()
	want := Config{
		FeishuAppID: "cli_test", FeishuAppSecret: "app-secret-XYZ", InstanceID: host,
		FeishuBaseURL: "https://open.feishu.cn", FeishuEventMode: "ws",
		GuanceAPIKey: "guance-key-XYZ", GuanceBaseURL: "https://openapi.guance.com",
		GuanceConsoleURL: "https://console.guance.com", GuanceRateLimit: 18,
		PollInterval: 10 * time.Second, QuietAfter: 24 * time.Hour, StormThreshold: 10, HTTPAddr: ":8080", DataDir: "./data",
		LogLevel: "info", LogFormat: "json",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestParseConfigNamesEveryBadVariable(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		wantBad []string
	}{
		{"missing guance key", []string{"FEISHU_APP_ID=cli", "FEISHU_APP_SECRET=s"}, []string{"GUANCE_API_KEY"}},
		{"empty app id", requiredEnv("FEISHU_APP_ID="), []string{"FEISHU_APP_ID"}},
		{"nothing set", nil, []string{"FEISHU_APP_ID", "FEISHU_APP_SECRET", "GUANCE_API_KEY"}},
		{"http without encrypt key", requiredEnv("FEISHU_EVENT_MODE=http"), []string{"FEISHU_ENCRYPT_KEY", "FEISHU_VERIFICATION_TOKEN"}},
		{"many malformed", requiredEnv(
			"POLL_INTERVAL=soon", "GUANCE_RATE_LIMIT=lots", "FEISHU_EVENT_MODE=smoke",
			"LOG_LEVEL=loud", "LOG_FORMAT=xml", "FEISHU_CHAT_ID=chat1", "GUANCE_BASE_URL=openapi.guance.com",
			"REDIS_URL=localhost:6379"),
			[]string{"POLL_INTERVAL", "GUANCE_RATE_LIMIT", "FEISHU_EVENT_MODE", "LOG_LEVEL", "LOG_FORMAT",
				"FEISHU_CHAT_ID", "GUANCE_BASE_URL", "REDIS_URL"}},
		{"out of range", requiredEnv("POLL_INTERVAL=10ms", "GUANCE_RATE_LIMIT=0", "QUIET_AFTER=1s", "STORM_THRESHOLD=-1",
			"GUANCE_WEBHOOK_TOKEN=short"), []string{"POLL_INTERVAL", "GUANCE_RATE_LIMIT", "QUIET_AFTER", "STORM_THRESHOLD", "GUANCE_WEBHOOK_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.env)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("parseConfig error = %v, want *ConfigError", err)
			}
			var named []string
			for _, p := range ce.Problems {
				key, _, _ := strings.Cut(p, ":")
				named = append(named, key)
			}
			for _, want := range tt.wantBad {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if len(named) != len(tt.wantBad) {
				t.Errorf("problems name %v, want exactly %v", named, tt.wantBad)
			}
		})
	}
}

func TestParseConfigHTTPMode(t *testing.T) {
	cfg, err := parseConfig(requiredEnv("FEISHU_EVENT_MODE=http", "FEISHU_ENCRYPT_KEY=ek", "FEISHU_VERIFICATION_TOKEN=vt"))
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if cfg.FeishuEventMode != "http" || cfg.FeishuEncryptKey != "ek" {
		t.Errorf("got mode %q key %q", cfg.FeishuEventMode, cfg.FeishuEncryptKey)
	}
}

func TestParseConfigErrorsKeepSecretsOut(t *testing.T) {
	secrets := []string{"app-secret-XYZ", "guance-key-XYZ", "encrypt-XYZ", "redispw-XYZ"}
	_, err := parseConfig([]string{
		"FEISHU_APP_ID=cli", "FEISHU_APP_SECRET=app-secret-XYZ", "GUANCE_API_KEY=guance-key-XYZ",
		"FEISHU_ENCRYPT_KEY=encrypt-XYZ", "FEISHU_EVENT_MODE=http",
		"REDIS_URL=mysql://:redispw-XYZ@db", "POLL_INTERVAL=guance-key-XYZ", "GUANCE_RATE_LIMIT=app-secret-XYZ",
	})
	if err == nil {
		t.Fatal("parseConfig accepted bad values")
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q leaks secret %q", err, s)
		}
	}
}
