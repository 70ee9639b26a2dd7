package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// After an interrupted import, thousands of objects are leftovers: verify
// groups them and its last line is always the summary.
func TestVerifyGroupsLeftovers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	mustRun(t, root, "import", "--tar", tarFile(t, "f", "content"))
	for i := range 50 {
		name := fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(i))))
		if err := os.WriteFile(filepath.Join(root, "manifests", "sha256", name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out := rootswapIn(t, root, "verify")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "leftover: 50 in manifests/: manifests/sha256/") ||
		!strings.Contains(lines[0], "and 47 more (-v lists them)") {
		t.Errorf("verify: exit %d, want 0, one grouped leftover line and the summary:\n%s", code, out)
	}
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "0 problems, 50 leftovers") {
		t.Errorf("verify: last line %q is not the summary", last)
	}
	code, out = rootswapIn(t, root, "-v", "verify")
	if n := strings.Count(out, "\nleftover: manifests/sha256/") + strings.Count(out[:min(len(out), 10)], "leftover:"); code != 0 || n != 50 {
		t.Errorf("verify -v: exit %d, %d leftover lines, want 50:\n%s", code, n, out)
	}
	code, out = rootswapIn(t, root, "verify", "--repair")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "repaired: removed 50 in manifests/") ||
		!strings.HasSuffix(lines[2], "50 leftovers, 50 repaired") {
		t.Errorf("verify --repair: exit %d, want 0, grouped leftovers, grouped removals and the summary:\n%s", code, out)
	}
}
