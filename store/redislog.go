package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SetRedisLogger sends the Redis client library's own log lines (a pool that cannot
// dial, a connection that broke) to l at warn level, instead of plain text on stderr
// beside the service's structured logs. The library's logger is process-wide.
func SetRedisLogger(l *slog.Logger) {
	redis.SetLogger(redisLog{l})
}

// redisLog adapts slog to the library's Printf-style logger.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}
