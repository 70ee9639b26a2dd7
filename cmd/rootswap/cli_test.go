package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
)

// execute runs the CLI in-process as main does and returns its exit code
// and output.
func execute(t *testing.T, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--root", filepath.Join(t.TempDir(), "store")}, args...))
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(&out, err)
	}
	return exitCode(err), out.String()
}

func TestEveryCommandHasHelpWithExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" || strings.HasPrefix(sub.CommandPath(), "rootswap completion") {
				continue
			}
			t.Run(sub.CommandPath(), func(t *testing.T) {
				args := append(strings.Fields(strings.TrimPrefix(sub.CommandPath(), "rootswap ")), "--help")
				code, out := execute(t, args...)
				if code != 0 || !strings.Contains(out, "Usage:") {
					t.Errorf("%v: exit %d\n%s", args, code, out)
				}
				if sub.Example == "" {
					t.Errorf("%s has no example", sub.CommandPath())
				}
			})
			walk(sub)
		}
	}
	walk(newRootCmd())
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"prepare", "only-one"},
		{"prepare", "--no-such-flag", "a", "b"},
		{"activate", "-bad", "sha256:" + strings.Repeat("a", 64)},
		{"activate", "ok", "not-a-digest"},
		{"rollback"},
		{"history", "a/b"},
		{"import"},
		{"import", "img", "--tar", "x.tar"},
		{"list", "extra"},
		{"run"},
	} {
		if code, out := execute(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, out)
		}
	}
}

func TestFailuresExit1(t *testing.T) {
	for _, args := range [][]string{
		{"activate", "m", "sha256:" + strings.Repeat("a", 64)},
		{"rollback", "nomachine"},
		{"import", "--tar", "/nonexistent.tar"},
	} {
		if code, out := execute(t, args...); code != 1 {
			t.Errorf("%v: exit %d, want 1\n%s", args, code, out)
		}
	}
}

func TestExitCodeClasses(t *testing.T) {
	for err, want := range map[error]int{
		nil:          0,
		usage("bad"): 2,
		fmt.Errorf("x: %w", activate.ErrInvalidName): 2,
		fmt.Errorf("tree: %w", cache.ErrNotFound):    1,
		fmt.Errorf("lock: %w", cache.ErrLocked):      75,
		errors.New("anything else"):                  1,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestJournalEntry(t *testing.T) {
	h := &journalHandler{level: slog.LevelInfo}
	h2 := h.WithAttrs([]slog.Attr{slog.String("machine", "web")}).(*journalHandler)
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "rolled back", 0)
	r.AddAttrs(slog.String("digest", "sha256:ab"), slog.Uint64("generation", 3), slog.String("other", "x y"))
	msg, pri, vars := h2.entry(r)
	if pri != journal.PriWarning {
		t.Errorf("priority %d, want warning", pri)
	}
	for k, v := range map[string]string{"ROOTSWAP_MACHINE": "web", "ROOTSWAP_DIGEST": "sha256:ab", "ROOTSWAP_GENERATION": "3", "SYSLOG_IDENTIFIER": "rootswap"} {
		if vars[k] != v {
			t.Errorf("%s=%q, want %q", k, vars[k], v)
		}
	}
	if !strings.Contains(msg, `rolled back machine="web"`) || !strings.Contains(msg, `other="x y"`) {
		t.Errorf("message %q", msg)
	}
	if h.Enabled(context.Background(), slog.LevelDebug) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("level filter")
	}
	for l, want := range map[slog.Level]journal.Priority{slog.LevelDebug: journal.PriDebug, slog.LevelInfo: journal.PriInfo, slog.LevelError: journal.PriErr} {
		if priority(l) != want {
			t.Errorf("priority(%v) = %d", l, priority(l))
		}
	}
}

func TestCompletionOffersMachinesAndDigests(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s, err := cache.Open(ctx, root, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.Add(cache.Entry{Name: "usr", Kind: cache.KindDir, Mode: 0o755}, nil)
	d := digest.FromString("tree")
	if _, err := b.Commit(ctx, d, []string{"img:1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := activate.Activate(ctx, s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	complete := func(args ...string) string {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(append([]string{"__complete", "--root", root}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if out := complete("rollback", "w"); !strings.Contains(out, "web\n") {
		t.Errorf("rollback w<TAB>: %q", out)
	}
	if out := complete("activate", "web", "sha256:"); !strings.Contains(out, d.String()+"\timg:1") {
		t.Errorf("activate web sha256:<TAB>: %q", out)
	}
	if out := complete("rollback", "x"); strings.Contains(out, "web") {
		t.Errorf("rollback x<TAB> offered web: %q", out)
	}
}

func TestGCDryRunLeavesDeadStaging(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	if _, err := cache.Open(context.Background(), root, cache.Options{}); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(root, "tmp", "import-1-dead")
	os.Mkdir(dead, 0o700)
	os.WriteFile(dead+".lock", nil, 0o600)
	cmd := newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{"--root", root, "gc", "--dry-run"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); err != nil {
		t.Fatalf("gc --dry-run removed dead staging: %v", err)
	}
	cmd = newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{"--root", root, "gc"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("gc left dead staging: %v", err)
	}
}

func TestImagesShowsPins(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s, err := cache.Open(ctx, root, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		b, err := s.NewBuilder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Add(cache.Entry{Name: name, Kind: cache.KindDir, Mode: 0o755}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Commit(ctx, digest.FromString(name), nil); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"--root", root}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	run("pin", digest.FromString("a").String())
	var rows []imageRow
	if err := json.Unmarshal([]byte(run("images", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if want := r.Digest == digest.FromString("a"); r.Pinned != want {
			t.Errorf("images: %s pinned=%v, want %v", r.Digest, r.Pinned, want)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("images listed %d trees", len(rows))
	}
}

// TestErrorsNameTheCommandOnce: exitCode prints "rootswap: " before every
// error, so an error must not start with "rootswap" again.
func TestErrorsNameTheCommandOnce(t *testing.T) {
	for _, args := range [][]string{{"list", "extra"}, {"history"}, {"gc", "x"}} {
		_, out := execute(t, args...)
		if strings.HasPrefix(out, "rootswap") || !strings.HasPrefix(out, args[0]+": ") {
			t.Errorf("%v: error %q, want it to start with %q", args, out, args[0]+": ")
		}
	}
}
