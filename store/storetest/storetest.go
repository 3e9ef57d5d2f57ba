// Package storetest provides stores for tests and the contract suite every [store.Store] implementation
// must pass.
//
// [Redis] talks to the redis-server at REDIS_ADDR or, when it is unset, to one this test binary starts on a
// free loopback port (redis-server must be in PATH; tests are skipped without it, unless CI=true). A package
// whose tests use Redis should stop that server when its tests end:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"issuebot/store"
)

// Main runs the tests of a package, then stops the redis-server the binary started, if any. Call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	stopServer()
	os.Exit(code)
}

// Redis returns a Redis store with a key prefix of its own, so tests may run in parallel. Its keys are deleted
// and its client closed when the test ends. opts may set the clock; a prefix given in opts is overridden.
func Redis(t testing.TB, opts ...store.Option) *store.Redis {
	t.Helper()
	addr := requireRedis(t)
	prefix := "issuebot-test:" + rand.Text()[:12] + ":"
	t.Cleanup(func() { deleteKeys(t, addr, prefix) })
	return openRedis(t, addr, prefix, opts...)
}

// RedisAddr returns the host:port of the Redis the tests use (REDIS_ADDR, or a redis-server this binary
// starts), or skips the test when there is none (fails it when CI=true). Tests that write to it directly
// must use keys of their own.
func RedisAddr(t testing.TB) string {
	t.Helper()
	return requireRedis(t)
}

// requireRedis returns the address of a usable Redis, or skips the test (fails it when CI=true).
func requireRedis(t testing.TB) string {
	t.Helper()
	addr, err := redisAddr()
	if err == nil {
		return addr
	}
	if errors.Is(err, errNoServer) && os.Getenv("CI") != "true" {
		t.Skipf("skipping Redis test: %v (set REDIS_ADDR or install redis-server)", err)
	}
	t.Fatalf("redis: %v", err)
	return ""
}

// openRedis connects a new client to addr and closes it when the test ends.
func openRedis(t testing.TB, addr, prefix string, opts ...store.Option) *store.Redis {
	t.Helper()
	opts = append(slices.Clone(opts), store.WithPrefix(prefix))
	s := store.NewRedis(redis.NewClient(&redis.Options{Addr: addr}), opts...)
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("ping redis at %s: %v", addr, err)
	}
	return s
}

// deleteKeys deletes every key under prefix, with a client of its own (the test's may be closed by then).
func deleteKeys(t testing.TB, addr, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.Del(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				t.Errorf("delete test keys %s*: %v", prefix, err)
				return
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan test keys %s*: %v", prefix, err)
		return
	}
	if err := flush(); err != nil {
		t.Errorf("delete test keys %s*: %v", prefix, err)
	}
}

// Embedded returns an embedded store in a file under t.TempDir(), closed when the test ends.
func Embedded(t testing.TB) *store.Embedded {
	t.Helper()
	return openEmbedded(t, filepath.Join(t.TempDir(), store.EmbeddedFile))
}

func openEmbedded(t testing.TB, path string, opts ...store.Option) *store.Embedded {
	t.Helper()
	s, err := store.OpenEmbedded(path, opts...)
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Clock is a manual clock for TTL tests: it stands still until Advance moves it. Its zero value is not
// usable; call NewClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's time; pass it to store.WithClock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Advancer is implemented by a store under contract test whose clock the suite can move. The suite waits
// for TTLs in real time on stores that do not implement it.
type Advancer interface {
	Advance(d time.Duration)
}

// Reopener is implemented by a store under contract test that can be closed and opened again over the same
// data. The suite skips its persistence test on stores that do not implement it.
type Reopener interface {
	Reopen(t *testing.T) store.Store
}

// redisSubject is a Redis store under contract test.
type redisSubject struct {
	*store.Redis
	addr string
}

// Reopen closes the client and connects a new one with the same key prefix.
func (s redisSubject) Reopen(t *testing.T) store.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return redisSubject{Redis: openRedis(t, s.addr, s.Prefix()), addr: s.addr}
}

// RedisSubject opens a store for [Contract] like [Redis]; it implements [Reopener].
func RedisSubject(t *testing.T) store.Store {
	t.Helper()
	r := Redis(t)
	addr, _ := redisAddr() // Redis succeeded, so this does too
	return redisSubject{Redis: r, addr: addr}
}

// embeddedSubject is an embedded store under contract test, on a manual clock.
type embeddedSubject struct {
	*store.Embedded
	clock *Clock
}

// Advance moves the store's clock.
func (s embeddedSubject) Advance(d time.Duration) { s.clock.Advance(d) }

// Reopen closes the file and opens it again with the same clock.
func (s embeddedSubject) Reopen(t *testing.T) store.Store {
	t.Helper()
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return embeddedSubject{Embedded: openEmbedded(t, path, store.WithClock(s.clock.Now)), clock: s.clock}
}

// EmbeddedSubject opens a store for [Contract] like [Embedded], but on a manual clock; it implements
// [Advancer] and [Reopener].
func EmbeddedSubject(t *testing.T) store.Store {
	t.Helper()
	c := NewClock(time.Now())
	path := filepath.Join(t.TempDir(), store.EmbeddedFile)
	return embeddedSubject{Embedded: openEmbedded(t, path, store.WithClock(c.Now)), clock: c}
}
