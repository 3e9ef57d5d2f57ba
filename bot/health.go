package bot

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Probes serves /healthz and /readyz.
type Probes struct {
	// Store is pinged by /readyz.
	Store interface {
		Ping(ctx context.Context) error
	}
	// IntakeReady reports whether Feishu events can arrive.
	IntakeReady func() bool
}

// Healthz answers 200 while the process serves HTTP at all.
func (p Probes) Healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// Readyz answers 200 when the store is reachable and the Feishu intake is connected,
// 503 otherwise, saying which part is not ready.
func (p Probes) Readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	storeOK := p.Store.Ping(ctx) == nil
	intakeOK := p.IntakeReady()
	status := http.StatusOK
	if !storeOK || !intakeOK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"store": okWord(storeOK), "feishu_intake": okWord(intakeOK)})
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "down"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
