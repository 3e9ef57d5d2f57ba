package guance

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestListChannels(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "GET")
		testBody(t, r, "")
		// The quick_list row of reference §2.1, and a default channel with id null.
		reply(w, 200, ok(`[{"createAt":1680767371,"creator":"acnt_xxxx32","deleteAt":1680767373,"description":"…","id":38,
 "name":"test频道_…","notifyTarget":[],"status":0,"subscribeType":"","updateAt":1681357025,
 "updator":"acnt_xxxx32","uuid":"chan_xxxx32","workspaceUUID":"wksp_xxxx32"},
 {"id":null,"name":"default","uuid":"chan_default","deleteAt":-1}]`))
	})
	got, err := c.ListChannels(t.Context())
	if err != nil {
		t.Fatalf("ListChannels: %v", err)
	}
	want := []Channel{
		{ID: 38, UUID: "chan_xxxx32", Name: "test频道_…", Description: "…", WorkspaceUUID: "wksp_xxxx32"},
		{UUID: "chan_default", Name: DefaultChannelName},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListChannels mismatch (-want +got):\n%s", diff)
	}
}
