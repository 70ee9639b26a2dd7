package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// rootswapIn runs the CLI in-process on the store at root and returns its
// exit code and output.
func rootswapIn(t *testing.T, root string, args ...string) (int, string) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--root", root, "--lock-timeout", "5s"}, args...))
	err := cmd.Execute()
	if err != nil {
		fmt.Fprintln(&out, err)
	}
	return exitCode(err), out.String()
}

// tarFile writes a one-file rootfs archive and returns its path.
func tarFile(t *testing.T, name, content string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1700000000, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(content))
	tw.Close()
	p := filepath.Join(t.TempDir(), name+".tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRun(t *testing.T, root string, args ...string) string {
	t.Helper()
	code, out := rootswapIn(t, root, args...)
	if code != 0 {
		t.Fatalf("rootswap %v: exit %d\n%s", args, code, out)
	}
	return out
}

// hasRow reports whether a line of out starts with these fields.
func hasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}

func TestGCPinUnpin(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	old := strings.TrimSpace(mustRun(t, root, "import", "--tar", tarFile(t, "old", strings.Repeat("o", 4096))))
	cur := strings.TrimSpace(mustRun(t, root, "import", "--tar", tarFile(t, "new", "new")))
	mustRun(t, root, "activate", "web", cur)

	var plan struct {
		DryRun bool `json:"dry_run"`
		Trees  []struct {
			Digest string `json:"digest"`
			Bytes  int64  `json:"bytes"`
			Reason string `json:"reason"`
		} `json:"trees"`
		Objects    int   `json:"objects"`
		BytesFreed int64 `json:"bytes_freed"`
		Kept       []struct {
			Digest string `json:"digest"`
			Why    string `json:"why"`
		} `json:"kept"`
	}
	out := mustRun(t, root, "gc", "--dry-run", "--json")
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	if !plan.DryRun || len(plan.Trees) != 1 || plan.Trees[0].Digest != old || plan.Trees[0].Reason != "unreachable" ||
		plan.Trees[0].Bytes != 4096 || plan.Objects != 1 || plan.BytesFreed != 4096 {
		t.Errorf("dry-run plan is not: remove the old tree, 1 object, 4096 bytes\n%s", out)
	}
	if len(plan.Kept) != 1 || plan.Kept[0].Digest != cur || !strings.Contains(plan.Kept[0].Why, "machine web: current") {
		t.Errorf("dry-run plan does not keep the current tree with its reason\n%s", out)
	}
	if out := mustRun(t, root, "gc", "--dry-run"); !hasRow(out, "would", "remove", old) || !hasRow(out, "keep", cur) {
		t.Errorf("gc --dry-run text:\n%s", out)
	}

	if out := mustRun(t, root, "pin", old); out != "pinned "+old+"\n" {
		t.Errorf("pin: %q", out)
	}
	if out := mustRun(t, root, "gc"); !strings.HasPrefix(out, "removed 0 tree(s), 0 object(s)") {
		t.Errorf("gc with the old tree pinned:\n%s", out)
	}
	if out := mustRun(t, root, "unpin", old); out != "unpinned "+old+"\n" {
		t.Errorf("unpin: %q", out)
	}
	if out := mustRun(t, root, "unpin", old); out != old+" was not pinned\n" {
		t.Errorf("second unpin: %q", out)
	}
	out = mustRun(t, root, "gc")
	if !hasRow(out, "removed", old) || !strings.Contains(out, "removed 1 tree(s), 1 object(s), 0 staging dir(s), 0 lease(s): 4.1 kB") {
		t.Errorf("gc after unpin:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(root, "trees", "sha256", strings.TrimPrefix(old, "sha256:"))); !os.IsNotExist(err) {
		t.Errorf("old tree still on disk: %v", err)
	}
	if code, out := rootswapIn(t, root, "pin", old); code != 1 || !strings.Contains(out, "not found") {
		t.Errorf("pin of a collected tree: exit %d, want 1\n%s", code, out)
	}
}

func TestGCCommandLineErrors(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	storetest.Open(t, root)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"gc", "--keep", "-1"}, 2},
		{[]string{"gc", "--unused-for", "-1h"}, 2},
		{[]string{"gc", "--unused-for", "soon"}, 2},
		{[]string{"gc", "extra"}, 2},
		{[]string{"pin"}, 2},
		{[]string{"pin", "not-a-digest"}, 2},
		{[]string{"unpin", "sha256:short"}, 2},
		{[]string{"pin", "sha256:" + strings.Repeat("a", 64)}, 1},
		{[]string{"unpin", "sha256:" + strings.Repeat("a", 64)}, 0},
		{[]string{"gc", "--dry-run"}, 0},
	} {
		if code, out := rootswapIn(t, root, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
	}
}

func TestUnusedForTakesDays(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "720h": 720 * time.Hour, "0": 0, "1d30m": 24*time.Hour + 30*time.Minute,
	} {
		var d days
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("--unused-for %s = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"d", "xd", "1.5d", "-1d", "1dd", "soon", "1d-1h"} {
		var d days
		if err := d.Set(in); err == nil {
			t.Errorf("--unused-for %s accepted as %v", in, time.Duration(d))
		}
	}
	root := filepath.Join(t.TempDir(), "store")
	storetest.Open(t, root)
	if code, out := rootswapIn(t, root, "gc", "--dry-run", "--unused-for", "30d"); code != 0 {
		t.Errorf("gc --unused-for 30d: exit %d\n%s", code, out)
	}
}

// TestGCLayers: a cached layer no tree was built from is a row of gc's
// plan and report, with its bytes, and in the JSON's layers.
func TestGCLayers(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	s := storetest.Open(t, root)
	w, err := s.NewLayerWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := cache.Entry{Name: "f", Kind: cache.KindFile, Mode: 0o644, Size: 5, ModTime: time.Unix(1700000000, 0)}
	obj, err := w.Put(e, strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	diffID := digest.FromString("loose layer")
	if _, err := w.Commit(ctx, cache.LayerManifest{DiffID: diffID, Entries: []cache.ManifestEntry{{Entry: e, Object: obj}}}); err != nil {
		t.Fatal(err)
	}
	var plan struct {
		Layers []struct {
			DiffID string `json:"diff_id"`
			Bytes  int64  `json:"bytes"`
		} `json:"layers"`
	}
	out := mustRun(t, root, "gc", "--dry-run", "--json")
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Layers) != 1 || plan.Layers[0].DiffID != diffID.String() || plan.Layers[0].Bytes != 5 {
		t.Errorf("gc --dry-run --json: %v\n%s", err, out)
	}
	out = mustRun(t, root, "gc")
	if !hasRow(out, "removed", "layer", diffID.String(), "5", "B") || !strings.Contains(out, "1 object(s)") || !strings.Contains(out, "(and 1 cached layer(s))") {
		t.Errorf("gc:\n%s", out)
	}
}
