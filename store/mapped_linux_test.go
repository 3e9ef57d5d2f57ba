package store

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEmbeddedReleasesMappedPages checks that the pages a scan of the records mapped leave
// the process's resident set when the store releases them.
func TestEmbeddedReleasesMappedPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	e, err := OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	snap, _ := json.Marshal(map[string]string{"description": strings.Repeat("disk usage above threshold ", 40)})
	for i := range 2000 {
		is := Issue{IssueUUID: fmt.Sprintf("issue_%05d", i), Name: "tracked", Snapshot: snap,
			Cards: []Card{{ChatID: "oc_1", MessageID: fmt.Sprintf("om_%05d", i)}}}
		if err := e.PutIssue(t.Context(), is); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2000 {
		if _, err := e.GetIssue(t.Context(), fmt.Sprintf("issue_%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before := mappedKB(t, path)
	if before < 1024 {
		t.Fatalf("reading every record mapped %d kB of the file, want over 1 MB", before)
	}
	e.releaseMapped()
	if after := mappedKB(t, path); after > before/10 {
		t.Errorf("resident mapped pages of the file: %d kB before the release, %d kB after; want a tenth at most", before, after)
	}
}

// mappedKB is how much of the file at path is resident in this process's mappings.
func mappedKB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"):
			in = fields[len(fields)-1] == path
		case in && len(fields) >= 2 && fields[0] == "Rss:":
			kb, _ := strconv.Atoi(fields[1])
			total += kb
		}
	}
	return total
}
