package fsys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTempName(t *testing.T) {
	a, b := TempName(".x-"), TempName(".x-")
	if a == b || !strings.HasPrefix(a, ".x-") || len(a) != len(".x-")+12 {
		t.Fatalf("TempName: %q and %q, want .x- and 12 hex digits, different", a, b)
	}
}

func TestStagedLink(t *testing.T) {
	dir := t.TempDir()
	left := func() []string {
		ents, _ := os.ReadDir(dir)
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	for _, target := range []string{"one", "two"} { // the second replaces the first
		l, err := StageSymlink(dir, ".l-", target)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Rename("current"); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(filepath.Join(dir, "current")); err != nil || got != target {
			t.Fatalf("current -> %q, %v; want %q", got, err, target)
		}
	}
	l, err := StageSymlink(dir, ".l-", "three")
	if err != nil {
		t.Fatal(err)
	}
	l.Remove()
	// A rename that fails (over a non-empty directory) drops the staged link.
	if err := os.MkdirAll(filepath.Join(dir, "busy", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if l, err = StageSymlink(dir, ".l-", "four"); err != nil {
		t.Fatal(err)
	}
	if err := l.Rename("busy"); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	if got := left(); strings.Join(got, " ") != "busy current" {
		t.Errorf("left in dir: %q, want busy and current only", got)
	}
}
