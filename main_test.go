package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"issuebot/bot/feishu/feishutest"
	"issuebot/guance/guancetest"
	"issuebot/store/storetest"
)

// TestMain lets the tests run this test binary as the real issuebot process.
func TestMain(m *testing.M) {
	if os.Getenv("ISSUEBOT_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	storetest.Main(m) // stops the redis-server it may have started
}

// startProcess runs issuebot's main() in a child process with env (plus nothing from
// this process), returning it and its combined, line-buffered output.
func startProcess(t *testing.T, env []string) (*exec.Cmd, *lines) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append([]string{"ISSUEBOT_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH")}, env...)
	out := &lines{}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start issuebot: %v", err)
	}
	go out.read(pr)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		_ = pw.Close()
	})
	return cmd, out
}

type lines struct {
	mu   sync.Mutex
	all  []string
	cond chan struct{}
	once sync.Once
}

func (l *lines) init() {
	l.once.Do(func() { l.cond = make(chan struct{}, 1) })
}

func (l *lines) read(r io.Reader) {
	l.init()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
		select {
		case l.cond <- struct{}{}:
		default:
		}
	}
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// waitFor returns the first output line for which match is true, failing at the deadline.
func (l *lines) waitFor(t *testing.T, d time.Duration, match func(string) bool) string {
	t.Helper()
	l.init()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, s := range l.all {
			if match(s) {
				l.mu.Unlock()
				return s
			}
		}
		l.mu.Unlock()
		select {
		case <-l.cond:
		case <-deadline.C:
			t.Fatalf("no matching output line within %v; output:\n%s", d, l.text())
		}
	}
}

func TestMainExitsTwoNamingMissingVariable(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{"ISSUEBOT_TEST_RUN_MAIN=1", "FEISHU_APP_ID=cli_x", "FEISHU_APP_SECRET=app-secret-XYZ", "POLL_INTERVAL=often"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want exit status 2; output: %s", err, out)
	}
	for _, want := range []string{"GUANCE_API_KEY", "POLL_INTERVAL"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not name %s", out, want)
		}
	}
	if strings.Contains(string(out), "app-secret-XYZ") {
		t.Errorf("output leaks the app secret: %s", out)
	}
}

// TestMainRunsAgainstFakes starts the real process with only the required variables,
// pointed at the fakes: it must come up with the embedded store and the long
// connection, answer /healthz and /readyz, and stop cleanly on SIGTERM.
func TestMainRunsAgainstFakes(t *testing.T) {
	fs := feishutest.NewServer(t)
	gs := guancetest.NewServer(t)
	dataDir := t.TempDir()
	cmd, out := startProcess(t, []string{
		"FEISHU_APP_ID=" + fs.AppID,
		"FEISHU_APP_SECRET=" + fs.AppSecret,
		"GUANCE_API_KEY=" + gs.APIKey,
		"FEISHU_BASE_URL=" + fs.URL,
		"GUANCE_BASE_URL=" + gs.URL,
		"HTTP_ADDR=127.0.0.1:0",
		"DATA_DIR=" + dataDir,
	})

	started := out.waitFor(t, 20*time.Second, func(s string) bool { return strings.Contains(s, `"issuebot started"`) })
	var rec struct {
		Addr  string `json:"http_addr"`
		Mode  string `json:"event_mode"`
		Store string `json:"store"`
	}
	if err := json.Unmarshal([]byte(started), &rec); err != nil {
		t.Fatalf("decode start log %q: %v", started, err)
	}
	if rec.Mode != "ws" || rec.Store != "embedded" {
		t.Errorf("started with mode %q store %q, want ws and embedded", rec.Mode, rec.Store)
	}
	base := "http://" + rec.Addr
	if code := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := fs.WaitConnected(ctx); err != nil {
		t.Fatalf("long connection never reached the fake: %v\n%s", err, out.text())
	}
	waitStatus(t, base+"/readyz", http.StatusOK, 20*time.Second)
	if code := get(t, base+"/metrics"); code != http.StatusOK {
		t.Errorf("/metrics = %d, want 200", code)
	}
	if _, err := os.Stat(dataDir + "/issuebot.db"); err != nil {
		t.Errorf("embedded store file: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, out.text())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after SIGTERM\n%s", out.text())
	}
	out.waitFor(t, 5*time.Second, func(s string) bool { return strings.Contains(s, `"issuebot stopped"`) })
	for _, secret := range []string{fs.AppSecret, gs.APIKey} {
		if strings.Contains(out.text(), secret) {
			t.Errorf("process output leaks a secret")
		}
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func waitStatus(t *testing.T, url string, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if get(t, url) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never answered %d within %v", url, want, d)
		}
		<-tick.C
	}
}
