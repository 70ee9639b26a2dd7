package integration

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/testimage"
)

// heldGenJSON is one row of `history --json`.
type heldGenJSON struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	Reason     string `json:"reason"`
	Current    bool   `json:"current"`
	Health     string `json:"health"`
	Declined   string `json:"declined"`
}

func (s *store) generations(name string) []heldGenJSON {
	s.t.Helper()
	var out []heldGenJSON
	if err := json.Unmarshal([]byte(s.ok("history", name, "--json")), &out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// TestManualRollbackHolds (issue 18 item 7), as a new user tries it: after
// `rollback app`, the prepare --pull that the restart applying it runs
// keeps v1 instead of re-activating v2, which the tag still names;
// history says why; --force takes v2 again.
func TestManualRollbackHolds(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)
	tag, retag := movingTag(t, "rootswap-test/rollback-holds")
	s := newStore(t)
	retag(v1)
	s.ok("prepare", "--pull", "app", tag)
	retag(v2)
	if out := s.ok("prepare", "--pull", "app", tag); !strings.Contains(out, "generation 2") {
		t.Fatalf("upgrade: %q", out)
	}
	s.ok("rollback", "app")
	r := s.run("prepare", "--pull", "app", tag)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 1 "+d1) || !strings.Contains(r.stdout, "declined") {
		t.Fatalf("prepare after the rollback: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "rolled back by hand") {
		t.Errorf("the decline does not say why:\n%s", r.stderr)
	}
	if ms := s.machines(); len(ms) != 1 || ms[0].Digest != d1 {
		t.Fatalf("machines after the held rollback: %+v", ms)
	}
	var found bool
	for _, h := range s.generations("app") {
		if h.Digest == d2 {
			found = true
			if h.Health != "failed" || h.Declined != "rolled back by hand" {
				t.Errorf("history row of v2: %+v", h)
			}
		}
	}
	if !found {
		t.Fatalf("history lacks v2")
	}
	if txt := s.ok("history", "app"); !strings.Contains(txt, "failed (rolled back by hand)") {
		t.Errorf("history does not say why v2 is declined:\n%s", txt)
	}
	if out := s.ok("prepare", "--pull", "--force", "app", tag); !strings.Contains(out, d2) {
		t.Fatalf("prepare --force: %q", out)
	}
}
