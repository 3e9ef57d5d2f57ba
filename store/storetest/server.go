package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// server is the redis-server this test binary started, shared by all its tests.
var server struct {
	once sync.Once
	addr string
	err  error
	cmd  *exec.Cmd
	// exited is closed when the process has exited.
	exited chan struct{}
}

// errNoServer means no redis-server binary is installed.
var errNoServer = errors.New("redis-server not found in PATH")

// serverReadyTimeout bounds how long a fresh redis-server may take to answer PING.
const serverReadyTimeout = 10 * time.Second

// redisAddr returns REDIS_ADDR, or the address of this binary's own redis-server, starting it on first use.
func redisAddr() (string, error) {
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return addr, nil
	}
	server.once.Do(func() {
		server.addr, server.err = startServer()
	})
	return server.addr, server.err
}

// lockedBuffer collects the server's output; the process writes it from exec's copying goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer starts redis-server on a free loopback port without persistence and waits until it answers.
func startServer() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errNoServer
	}
	port, err := freePort()
	if err != nil {
		return "", fmt.Errorf("find a free port for redis-server: %w", err)
	}
	dir, err := os.MkdirTemp("", "storetest-redis-")
	if err != nil {
		return "", fmt.Errorf("create redis-server directory: %w", err)
	}
	out := &lockedBuffer{}
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
		close(exited)
	}()
	server.cmd, server.exited = cmd, exited

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(addr, exited); err != nil {
		stopServer()
		return "", fmt.Errorf("redis-server on %s: %w\n%s", addr, err, out.String())
	}
	return addr, nil
}

// waitReady pings addr every 20ms until it answers, the process exits, or serverReadyTimeout passes.
func waitReady(addr string, exited <-chan struct{}) error {
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer client.Close()
	deadline := time.NewTimer(serverReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-deadline.C:
			return fmt.Errorf("not ready after %v: %w", serverReadyTimeout, lastErr)
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			lastErr = client.Ping(ctx).Err()
			cancel()
			if lastErr == nil {
				return nil
			}
		}
	}
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// stopServer kills this binary's redis-server, if it started one, and waits for it to exit.
func stopServer() {
	if server.cmd == nil || server.cmd.Process == nil {
		return
	}
	_ = server.cmd.Process.Kill()
	<-server.exited
	server.cmd = nil
}
