package bot

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type pinger struct{ err error }

func (p pinger) Ping(context.Context) error { return p.err }

func TestProbes(t *testing.T) {
	tests := []struct {
		name     string
		storeErr error
		intake   bool
		want     int
		wantBody string
	}{
		{"all up", nil, true, 200, `"feishu_intake":"ok"`},
		{"store down", errors.New("dial tcp: refused"), true, 503, `"store":"down"`},
		{"intake down", nil, false, 503, `"feishu_intake":"down"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Probes{Store: pinger{tt.storeErr}, IntakeReady: func() bool { return tt.intake }}
			rec := httptest.NewRecorder()
			p.Readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("readyz = %d %s, want %d containing %s", rec.Code, rec.Body, tt.want, tt.wantBody)
			}
			if strings.Contains(rec.Body.String(), "refused") {
				t.Errorf("readyz exposes error details: %s", rec.Body)
			}
			rec = httptest.NewRecorder()
			p.Healthz(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != 200 {
				t.Errorf("healthz = %d, want 200", rec.Code)
			}
		})
	}
}
