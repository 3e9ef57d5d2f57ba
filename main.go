// Command issuebot bridges Guance Cloud 异常追踪 issues and Feishu (Lark) group chats.
// Configuration comes from the environment; see README.md.
//
// Usage: issuebot runs the bot; issuebot doctor checks the setup against Feishu, Guance
// and the store and exits 0 when all is well; issuebot healthcheck asks a running
// issuebot's /healthz (for container health checks in an image without a shell).
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
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "doctor":
			code := doctor(ctx, os.Environ(), os.Stdout)
			stop()
			os.Exit(code)
		case "healthcheck":
			code := healthcheck(ctx, os.Environ(), os.Stderr)
			stop()
			os.Exit(code)
		}
	}
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
