package store

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

// TestRedisLogIsStructured: the Redis library's lines come out as one JSON record at
// warn level.
func TestRedisLogIsStructured(t *testing.T) {
	var buf bytes.Buffer
	redisLog{slog.New(slog.NewJSONHandler(&buf, nil))}.Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts: %v\n", 5, "connection refused")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q (%v)", buf.String(), err)
	}
	if rec["level"] != "WARN" || rec["msg"] != "redis: connection pool: failed to dial after 5 attempts: connection refused" {
		t.Errorf("record = %v", rec)
	}
}
