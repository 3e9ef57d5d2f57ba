package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheck asks the issuebot running beside it (same HTTP_ADDR) for /healthz and
// returns 0 when it answers 200, 1 otherwise. It exists for container health checks:
// the image is distroless, with no shell, curl or wget to do this.
func healthcheck(ctx context.Context, environ []string, stderr io.Writer) int {
	// Only HTTP_ADDR matters here: a problem with another variable is the bot's to report.
	cfg, _ := parseConfig(environ)
	u, err := healthzURL(cfg.HTTPAddr)
	if err != nil {
		fmt.Fprintln(stderr, "issuebot healthcheck:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintln(stderr, "issuebot healthcheck:", err)
		return 1
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "issuebot healthcheck:", err)
		return 1
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "issuebot healthcheck: GET %s answered %d\n", u, resp.StatusCode)
		return 1
	}
	return 0
}

// healthzURL turns a listen address into the URL of /healthz on it, dialling the
// loopback address when the bot listens on every address.
func healthzURL(addr string) (string, error) {
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	if port == "" || port == "0" {
		return "", fmt.Errorf("HTTP_ADDR %q: no fixed port to ask", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}
