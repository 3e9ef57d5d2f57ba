package guance

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestListLevels(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue-level/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "GET")
		testBody(t, r, "")
		reply(w, 200, ok(`[
 {"uuid":"system_level_0","name":"P0","color":"#E94444","description":"","isDefault":true},
 {"uuid":"system_level_3","name":"P3","color":"#C9C9C9","description":"impact unknown","isDefault":1},
 {"uuid":"issl_1","name":"Sev","color":"#000000","description":"custom","isDefault":false,"createAt":1690000000}]`))
	})
	got, err := c.ListLevels(t.Context())
	if err != nil {
		t.Fatalf("ListLevels: %v", err)
	}
	want := []Level{
		{UUID: "system_level_0", Name: "P0", Color: "#E94444", IsDefault: true},
		{UUID: "system_level_3", Name: "P3", Color: "#C9C9C9", Description: "impact unknown", IsDefault: true},
		{UUID: "issl_1", Name: "Sev", Color: "#000000", Description: "custom"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListLevels mismatch (-want +got):\n%s", diff)
	}
}
