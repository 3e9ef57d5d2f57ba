// Command issuebot bridges Guance Cloud 异常追踪 issues and Feishu (Lark) group chats.
// Configuration comes from the environment; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // TZ works even in images without a zoneinfo database
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Environ(), os.Stdout)
	stop()
	var ce *ConfigError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintln(os.Stderr, "issuebot:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "issuebot:", err)
		os.Exit(1)
	}
}
