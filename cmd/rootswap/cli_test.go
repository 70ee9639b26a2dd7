package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// execute runs the CLI in-process as main does, on a store of its own
// that is checked when the test ends if the command made one, and returns
// its exit code and output.
func execute(t *testing.T, args ...string) (int, string) {
	t.Helper()
	store := filepath.Join(t.TempDir(), "store")
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(store, "index.db")); err == nil {
			s, err := cache.Open(context.Background(), store, cache.Options{LockTimeout: storetest.LockTimeout})
			if err != nil {
				t.Fatal(err)
			}
			storetest.Check(t, s)
		}
	})
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--root", store}, args...))
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
		fmt.Errorf("x: %w", activate.ErrMountPoint):  2,
		fmt.Errorf("tree: %w", cache.ErrNotFound):    1,
		fmt.Errorf("lock: %w", cache.ErrLocked):      75,
		errors.New("anything else"):                  1,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestCompletionOffersMachinesAndDigests(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s := storetest.Open(t, root)
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
	storetest.Open(t, root)
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
	s := storetest.Open(t, root)
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
	var rows []activate.TreeStatus
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

// TestMain lets a test run this test binary as rootswap itself (for run,
// which replaces the process with systemd-nspawn).
func TestMain(m *testing.M) {
	if os.Getenv("ROOTSWAP_TEST_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// asMain runs this test binary as rootswap with args and env, and returns
// its exit code, stdout and stderr.
func asMain(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "ROOTSWAP_TEST_AS_MAIN=1"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errb.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

// cli runs the CLI in-process with exactly args.
func cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(&out, err)
	}
	return exitCode(err), out.String()
}

// storeWithMachine makes a store at a fresh root holding one tree, active
// for machine web, and returns the root and the tree's digest.
func storeWithMachine(t *testing.T) (string, digest.Digest) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s := storetest.Open(t, root)
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(cache.Entry{Name: "usr", Kind: cache.KindDir, Mode: 0o755}, nil); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("tree")
	if _, err := b.Commit(ctx, d, []string{"img:1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := activate.Activate(ctx, s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	return root, d
}

// TestRunTakesGlobalFlagsBeforeName runs run with a fake systemd-nspawn
// that records its arguments: global flags before run or before NAME, and
// a "--" before NAME, must reach rootswap, and nothing after NAME.
func TestRunTakesGlobalFlagsBeforeName(t *testing.T) {
	root, d := storeWithMachine(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "nspawn")
	argsFile := filepath.Join(dir, "args")
	os.WriteFile(fake, []byte("#!/bin/sh\nfor a; do echo \"$a\"; done > "+argsFile+"\n"), 0o755)
	env := []string{"ROOTSWAP_NSPAWN=" + fake, "ROOTSWAP_ROOT=/nonexistent"}
	tree := filepath.Join(root, "trees", "sha256", d.Encoded())
	for _, args := range [][]string{
		{"-q", "--root", root, "run", "web", "-q", "/bin/x"},
		{"--root=" + root, "--lock-timeout", "5s", "run", "web", "-q", "/bin/x"},
		{"run", "--root", root, "-v", "--", "web", "-q", "/bin/x"},
		{"-v", "run", "-q", "--root=" + root, "web", "-q", "/bin/x"},
		{"--root", root, "run", "--", "web", "-q", "/bin/x"},
	} {
		os.Remove(argsFile)
		code, _, stderr := asMain(t, env, args...)
		got, _ := os.ReadFile(argsFile)
		if code != 0 {
			t.Errorf("%q: exit %d\n%s", args, code, stderr)
			continue
		}
		// The -q after NAME is nspawn's, among its options before the
		// command (which rootswap's init runs).
		lines := strings.Split(strings.TrimSpace(string(got)), "\n")
		if !strings.Contains(string(got), tree+"\n-") || !strings.Contains(string(got), "\n-q\n") || lines[len(lines)-1] != "/bin/x" {
			t.Errorf("%q: nspawn got %q", args, got)
		}
	}
	if code, out := cli(t, "--root", root, "run", "--bogus", "web"); code != 2 || !strings.Contains(out, "nspawn options go after NAME") {
		t.Errorf("run --bogus web: exit %d\n%s", code, out)
	}
	if code, out := cli(t, "--root", root, "run", "--lock-timeout", "-1s", "web"); code != 2 {
		t.Errorf("run --lock-timeout -1s web: exit %d\n%s", code, out)
	}
	// run's own flags, before NAME: --no-init and --entrypoint.
	for _, tc := range []struct {
		args []string
		tail string // what nspawn's argument list ends with
	}{
		{[]string{"run", "--no-init", "web", "/bin/x"}, "--kill-signal=SIGTERM\n--\n/bin/x"},
		{[]string{"run", "--entrypoint", "/bin/ep", "--no-init", "web", "--", "-a"}, "--kill-signal=SIGTERM\n--\n/bin/ep\n-a"},
		{[]string{"run", "--entrypoint=/bin/ep", "web"}, "container-init\n--\n/bin/ep"},
	} {
		os.Remove(argsFile)
		code, _, stderr := asMain(t, env, append([]string{"--root", root}, tc.args...)...)
		got, _ := os.ReadFile(argsFile)
		if code != 0 || !strings.HasSuffix(string(got), tc.tail+"\n") {
			t.Errorf("%q: exit %d, nspawn got %q, want it to end %q\n%s", tc.args, code, got, tc.tail, stderr)
		}
	}
}

func TestRunCompletionHonoursRoot(t *testing.T) {
	root, _ := storeWithMachine(t)
	for _, args := range [][]string{
		{"__complete", "--root", root, "run", ""},
		{"__complete", "run", "--root", root, "w"},
		{"__complete", "--root=" + root, "run", "--", ""},
	} {
		t.Setenv("ROOTSWAP_ROOT", "/nonexistent")
		_, out := cli(t, args...)
		if !strings.Contains(out, "web\n") {
			t.Errorf("%q: %q, want web", args, out)
		}
	}
}

func TestUnitCommandWithoutDashDashSaysWhere(t *testing.T) {
	code, out := execute(t, "unit", "web", "img", "/bin/sh", "-c", "x")
	if code != 2 || !strings.Contains(out, "goes after --") {
		t.Errorf("unit web img /bin/sh -c x: exit %d\n%s", code, out)
	}
}

func TestEmptyRootIsRefused(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, args := range [][]string{{"--root", "", "prepare", "web", "img"}, {"--root=", "import", "--tar", "-"}, {"run", "--root", "", "web"}} {
		if code, out := cli(t, args...); code != 2 || !strings.Contains(out, "--root: empty") {
			t.Errorf("%q: exit %d\n%s", args, code, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("--root '' wrote %d entries into the current directory", len(ents))
	}
}

// TestReadOnlyCommandsCreateNoStore: only import and prepare create a
// store; every other command on a mistyped --root says so and exits 1.
func TestReadOnlyCommandsCreateNoStore(t *testing.T) {
	t.Setenv("SERVICE_RESULT", "success")
	for _, args := range [][]string{
		{"list"}, {"images"}, {"history", "web"}, {"verify"}, {"gc", "--dry-run"}, {"gc"},
		{"report", "web"}, {"rollback", "web"}, {"run", "web"}, {"pin", "sha256:" + strings.Repeat("a", 64)},
		{"activate", "web", "sha256:" + strings.Repeat("a", 64)},
	} {
		root := filepath.Join(t.TempDir(), "typo")
		code, out := cli(t, append([]string{"--root", root}, args...)...)
		want := 1
		if args[0] == "report" {
			want = 0 // report never fails the unit over a missing store
		}
		if code != want || !strings.Contains(out, "no store at "+root) {
			t.Errorf("%v: exit %d, want %d and \"no store at %s\"\n%s", args, code, want, root, out)
		}
		if _, err := os.Stat(root); !os.IsNotExist(err) {
			t.Errorf("%v created %s: %v", args, root, err)
		}
	}
}

// TestLockTimeoutZeroFailsAtOnce holds the store lock and asks for it with
// --lock-timeout 0: the command must give up without waiting (the default
// would wait 60 s) and exit 75; a negative timeout is a usage error.
func TestLockTimeoutZeroFailsAtOnce(t *testing.T) {
	root, _ := storeWithMachine(t)
	s := storetest.Open(t, root)
	l, err := s.Lock(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	done := make(chan struct{})
	var code int
	var out string
	go func() {
		code, out = cli(t, "--root", root, "--lock-timeout", "0", "gc")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(cache.DefaultLockTimeout / 2):
		t.Fatal("gc --lock-timeout 0 still waits for the busy store")
	}
	if code != 75 || !strings.Contains(out, "store busy") {
		t.Errorf("gc --lock-timeout 0 on a busy store: exit %d\n%s", code, out)
	}
	if code, out := cli(t, "--root", root, "--lock-timeout", "-1s", "list"); code != 2 {
		t.Errorf("--lock-timeout -1s: exit %d\n%s", code, out)
	}
}

// TestReportCountsEachRunOnce: report measures a run from the start `run`
// recorded, once; a report with no run since (a start that failed before
// run) or without $SERVICE_RESULT records nothing and exits 0, as does a
// report for an unknown machine.
func TestReportCountsEachRunOnce(t *testing.T) {
	root, _ := storeWithMachine(t)
	s := storetest.Open(t, root)
	current := func() index.Generation {
		gens, _, err := activate.History(s, "web")
		if err != nil || len(gens) != 1 {
			t.Fatalf("history: %v %v", gens, err)
		}
		return gens[0]
	}
	started := func(ago time.Duration) { // what run records
		g := current()
		err := s.Update(func(tx *index.Tx) error {
			g.Starts++
			g.LastStart = time.Now().Add(-ago)
			return tx.PutGeneration("web", g)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SERVICE_RESULT", "exit-code")
	t.Setenv("EXIT_CODE", "exited")
	t.Setenv("EXIT_STATUS", "1")
	started(time.Second)
	if code, out := cli(t, "--root", root, "report", "web"); code != 0 || !strings.Contains(out, "exit-code exited 1 (1 failed in a row)") {
		t.Fatalf("report after a 1 s failed run: exit %d\n%s", code, out)
	}
	// A start whose ExecStartPre failed: no run, so nothing to count, even
	// though the last recorded start is now long enough ago.
	if code, out := cli(t, "--root", root, "--healthy-after", "1ms", "report", "web"); code != 0 || !strings.Contains(out, "nothing recorded") {
		t.Errorf("report with no run since the last report: exit %d\n%s", code, out)
	}
	if g := current(); g.Failures != 1 || g.LongestRun >= activate.DefaultHealthyAfter {
		t.Errorf("after a second report: %+v", g.Health)
	}
	t.Setenv("SERVICE_RESULT", "")
	started(time.Hour)
	code, out := cli(t, "--root", root, "report", "web")
	if code != 0 || !strings.Contains(out, "nothing recorded") {
		t.Errorf("report without $SERVICE_RESULT: exit %d\n%s", code, out)
	}
	if g := current(); g.Failures != 1 || g.LongestRun >= time.Hour {
		t.Errorf("report without $SERVICE_RESULT recorded %+v", g.Health)
	}
	if code, out := cli(t, "--root", root, "report", "--ran-for", "2s", "web"); code != 0 || !strings.Contains(out, "exited 1 (2 failed in a row)") {
		t.Errorf("report --ran-for 2s: exit %d\n%s", code, out)
	}
	if code, out := cli(t, "--root", root, "report", "nosuch"); code != 0 || !strings.Contains(out, "nothing recorded") {
		t.Errorf("report nosuch: exit %d\n%s", code, out)
	}
	if code, out := cli(t, "--root", root, "report", "-bad"); code != 2 {
		t.Errorf("report -bad: exit %d\n%s", code, out)
	}
}

// TestShortDigests: the 12-digit digests list and images print (or any
// unique prefix of at least 4 hex digits) work wherever a digest is asked.
func TestShortDigests(t *testing.T) {
	root, first := storeWithMachine(t)
	ctx := context.Background()
	s := storetest.Open(t, root)
	a := digest.Digest("sha256:abcd1" + strings.Repeat("1", 59))
	b := digest.Digest("sha256:abcd2" + strings.Repeat("2", 59))
	for _, d := range []digest.Digest{a, b} {
		bld, err := s.NewBuilder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bld.Add(cache.Entry{Name: "etc", Kind: cache.KindDir, Mode: 0o755}, nil)
		if _, err := bld.Commit(ctx, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"activate", "web", short(a)}, 0, "generation 2 " + a.String()},
		{[]string{"activate", "web", "abcd2"}, 0, "generation 3 " + b.String()},
		{[]string{"activate", "web", "sha256:abcd"}, 2, "ambiguous: it starts " + a.String() + ", " + b.String()},
		{[]string{"activate", "web", "abc"}, 2, "at least 4 hex digits"},
		{[]string{"activate", "web", "ffff"}, 1, "no tree in the store starts with it"},
		{[]string{"pin", short(b)}, 0, "pinned " + b.String()},
		{[]string{"unpin", b.Encoded()[:8]}, 0, "unpinned " + b.String()},
		{[]string{"rollback", "web", "--to", short(first)}, 0, "generation 1 " + first.String()},
		{[]string{"rollback", "web", "--to", "abcd"}, 2, "ambiguous"},
	} {
		code, out := cli(t, append([]string{"--root", root}, tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want %d and %q\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out := cli(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "rootswap version ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version: exit %d\n%s", code, out)
	}
}

// TestJSONListsAndDurations: every --json output has [] for an empty list
// (never null) and durations in seconds (never integer nanoseconds).
func TestJSONListsAndDurations(t *testing.T) {
	root, _ := storeWithMachine(t)
	s := storetest.Open(t, root)
	err := s.Update(func(tx *index.Tx) error {
		g, err := tx.Generation("web", 1)
		g.LongestRun = 90 * time.Second
		if err != nil {
			return err
		}
		return tx.PutGeneration("web", g)
	})
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	storetest.Open(t, empty)
	for _, args := range [][]string{
		{"--root", root, "history", "web", "--json"},
		{"--root", root, "list", "--json"}, {"--root", empty, "list", "--json"},
		{"--root", root, "images", "--json"}, {"--root", empty, "images", "--json"},
		{"--root", root, "gc", "--dry-run", "--json"}, {"--root", empty, "gc", "--json"},
		// verify --json: cache/verify.go:129 sets Leftovers to nil (null)
		// on an empty store; its owner fixes that.
	} {
		code, out := cli(t, args...)
		if code != 0 || !json.Valid([]byte(out)) {
			t.Errorf("%v: exit %d\n%s", args, code, out)
			continue
		}
		if strings.Contains(out, "null") {
			t.Errorf("%v: null in JSON\n%s", args, out)
		}
		if strings.Contains(out, "90000000000") {
			t.Errorf("%v: a duration in nanoseconds\n%s", args, out)
		}
	}
	_, out := cli(t, "--root", root, "history", "web", "--json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0]["longest_run_seconds"] != 90.0 {
		t.Errorf("history --json: %v %v", rows, err)
	}
}

func TestPrepareWithDockerDownNamesTheGeneration(t *testing.T) {
	root, d := storeWithMachine(t)
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	code, out := cli(t, "-q", "--root", root, "prepare", "web", "img:1")
	if code != 0 || !strings.Contains(out, "web: generation 1 "+d.String()+" (cached, daemon unreachable)") {
		t.Errorf("prepare with Docker down: exit %d\n%s", code, out)
	}
	// An IMAGE that never resolved here is no daemon that is down.
	if code, out := cli(t, "-q", "--root", root, "prepare", "web", "img:2"); code != 1 || !strings.Contains(out, "img:2 never resolved") {
		t.Errorf("prepare of a new image with Docker down: exit %d\n%s", code, out)
	}
}

// TestQuietKeepsTheResult: stdout is the command's result and -q never
// silences it; -q silences the log messages on stderr.
func TestQuietKeepsTheResult(t *testing.T) {
	root, _ := storeWithMachine(t)
	env := []string{"DOCKER_HOST=unix://" + filepath.Join(t.TempDir(), "no-docker.sock")}
	code, stdout, stderr := asMain(t, env, "--root", root, "prepare", "web", "img:1")
	if code != 0 || !strings.Contains(stdout, "web: generation 1") || !strings.Contains(stderr, "unreachable") {
		t.Errorf("prepare, Docker down: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = asMain(t, env, "-q", "--root", root, "prepare", "web", "img:1")
	if code != 0 || !strings.Contains(stdout, "web: generation 1") || stderr != "" {
		t.Errorf("-q prepare, Docker down: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
}
