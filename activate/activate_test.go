package activate

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// newStore opens a store in t.TempDir(), checked when the test ends.
func newStore(t testing.TB) *cache.Store {
	t.Helper()
	return storetest.New(t)
}

// importTree imports a tiny tree whose /etc/version says v.
func importTree(t testing.TB, s *cache.Store, v string) digest.Digest {
	t.Helper()
	return storetest.Import(t, s, "", storetest.File{Name: "etc/version", Content: v})
}

func TestActivateRollbackGenerations(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1, d2, d3 := importTree(t, s, "v1"), importTree(t, s, "v2"), importTree(t, s, "v3")

	for i, d := range []digest.Digest{d1, d2, d3} {
		g, changed, err := Activate(ctx, s, "m", d, "img:"+fmt.Sprint(i+1), "test")
		if err != nil || !changed || g.Number != uint64(i+1) {
			t.Fatalf("activate %d: gen %d changed %v err %v", i+1, g.Number, changed, err)
		}
	}
	if _, changed, _ := Activate(ctx, s, "m", d3, "img:3", "test"); changed {
		t.Error("activating the current tree again changed something")
	}
	assertCurrent(t, s, "m", d3, "v3")

	g, err := Rollback(ctx, s, "m", "")
	if err != nil || g.Number != 2 {
		t.Fatalf("rollback: %v %v", g, err)
	}
	assertCurrent(t, s, "m", d2, "v2")
	if g, err = Rollback(ctx, s, "m", ""); err != nil || g.Number != 1 {
		t.Fatalf("second rollback: %v %v", g, err)
	}
	if _, err = Rollback(ctx, s, "m", ""); !errors.Is(err, ErrNoGeneration) {
		t.Fatalf("rollback past the oldest: %v", err)
	}
	if g, err = Rollback(ctx, s, "m", d3.String()); err != nil || g.Number != 3 {
		t.Fatalf("rollback --to digest: %v %v", g, err)
	}
	if g, err = Rollback(ctx, s, "m", "1"); err != nil || g.Number != 1 {
		t.Fatalf("rollback --to 1: %v %v", g, err)
	}
	if _, err = Rollback(ctx, s, "m", "9"); !errors.Is(err, ErrNoGeneration) {
		t.Fatalf("rollback --to 9: %v", err)
	}
	// A new activation after rollbacks appends, it does not rewrite history.
	g, _, err = Activate(ctx, s, "m", d2, "img:2", "test")
	if err != nil || g.Number != 4 {
		t.Fatalf("activate after rollback: %v %v", g, err)
	}
	gens, m, err := History(s, "m")
	if err != nil || len(gens) != 4 || m.Current != 4 {
		t.Fatalf("history: %d gens, current %d, %v", len(gens), m.Current, err)
	}
	if _, _, err := Activate(ctx, s, "m", digest.FromString("nope"), "", "test"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("activate of a missing tree: %v", err)
	}
}

func assertCurrent(t *testing.T, s *cache.Store, name string, d digest.Digest, version string) {
	t.Helper()
	got, err := CurrentTree(s, name)
	if err != nil || got != d {
		t.Fatalf("current: %s %v, want %s", got, err, d)
	}
	// current names the tree's directory; what the tree holds is what
	// run mounts there (a stack) or the directory itself (a plain tree).
	if real, err := filepath.EvalSymlinks(filepath.Join(s.MachinesDir(), name, "current")); err != nil || real != s.TreePath(d) {
		t.Fatalf("current resolves to %s %v, want %s", real, err, s.TreePath(d))
	}
	b, err := os.ReadFile(filepath.Join(storetest.Tree(t, s, d), "etc", "version"))
	if err != nil || string(b) != version {
		t.Fatalf("current/etc/version: %q %v, want %q", b, err, version)
	}
	ms, err := List(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name && m.Digest != d {
			t.Fatalf("list says %s is at %s, want %s", name, m.Digest, d)
		}
	}
}

// A crash between the symlink flip and the index record leaves the index
// behind; the next operation adopts the symlink.
func TestRecoverFlipWithoutRecord(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1, d2 := importTree(t, s, "v1"), importTree(t, s, "v2")
	if _, _, err := Activate(ctx, s, "m", d1, "", "test"); err != nil {
		t.Fatal(err)
	}
	if err := flip(s, "m", d2, func() error { return nil }, nil); err != nil { // the record is lost
		t.Fatal(err)
	}
	if _, _, err := Activate(ctx, s, "m", d2, "", "test"); err != nil {
		t.Fatal(err)
	}
	gens, m, _ := History(s, "m")
	if len(gens) != 2 || gens[1].Digest != d2 || gens[1].Reason != "recovered" || m.Current != 2 {
		t.Fatalf("after recovery: %+v current %d", gens, m.Current)
	}
	if g, err := Rollback(ctx, s, "m", ""); err != nil || g.Digest != d1 {
		t.Fatalf("rollback after recovery: %+v %v", g, err)
	}
}

func TestFlipLeavesNoTemporaries(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1, d2 := importTree(t, s, "v1"), importTree(t, s, "v2")
	for i := 0; i < 10; i++ {
		d := d1
		if i%2 == 1 {
			d = d2
		}
		if _, _, err := Activate(ctx, s, "m", d, "", "test"); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.MachinesDir(), "m"))
	if len(ents) != 1 || ents[0].Name() != "current" {
		t.Fatalf("machines/m holds %v, want only current", ents)
	}
}

func TestNspawnArgs(t *testing.T) {
	args, err := NspawnArgs("web", "/t", []string{"--bind=/a:/b", "-E", "X=1", "/bin/sh", "-c", "-U"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --bind=/a:/b -E X=1 /bin/sh -c -U"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	args, _ = NspawnArgs("web", "/t", []string{"--volatile=state", "/bin/true"}, true)
	if got := strings.Join(args, " "); got != "--machine web --directory /t --kill-signal=SIGTERM --volatile=state /bin/true" {
		t.Errorf("volatile=state, registered: %s", got)
	}
	for _, bad := range [][]string{
		{"--volatile=no"}, {"-D", "/"}, {"--directory=/"}, {"-M", "x"}, {"--image=/x.raw"},
		{"-U"}, {"-bU"}, {"--private-users-chown"}, {"--private-users-ownership=chown"},
		{"--bind", "/a", "-U", "/bin/true"},
	} {
		if _, err := NspawnArgs("web", "/t", bad, false); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	// -E takes the rest of the cluster as its value: "-EUSER=x" is not -U.
	if _, err := NspawnArgs("web", "/t", []string{"-EUSER=x", "/bin/true"}, false); err != nil {
		t.Errorf("-EUSER=x refused: %v", err)
	}
}

// daemonRef is a bare image argument, as the command line parses it.
func daemonRef(name string) snapshot.Ref {
	return snapshot.Ref{Transport: snapshot.DockerDaemon, Name: name, Bare: true}
}

// testRef is an image argument as the command line parses it, for the
// two kinds these tests use: oci:PATH and a bare daemon reference.
func testRef(s string) snapshot.Ref {
	if p, ok := strings.CutPrefix(s, "oci:"); ok {
		return snapshot.Ref{Transport: snapshot.OCI, Path: p}
	}
	return daemonRef(s)
}

// fakeSource is the source side of Prepare in unit tests: image ref (as
// Ref.String spells it) →
// content of /etc/version, digest.FromString of it.
type fakeSource struct {
	images  map[string]string
	down    bool
	pullErr error
	imports int
	record  bool              // images ask to be recorded, as a registry's resolved afresh do
	broken  map[string]bool   // versions whose layer fails to open
	arch    map[string]string // versions whose config names this architecture (linux); "" none
}

func (f *fakeSource) String() string { return "fake" }

func (f *fakeSource) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if f.pullErr != nil {
		return snapshot.Image{}, f.pullErr
	}
	return f.Resolve(ctx, ref)
}

func (f *fakeSource) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if f.down {
		return snapshot.Image{}, fmt.Errorf("fake: %w", snapshot.ErrUnreachable)
	}
	v, ok := f.images[ref.String()]
	if !ok {
		return snapshot.Image{}, fmt.Errorf("image %s: %w", ref, snapshot.ErrImageNotFound)
	}
	return snapshot.Image{Ref: ref, Digest: digest.FromString(v), Manifest: digest.FromString("manifest " + v), Record: f.record, Content: fakeImage{f, v}}, nil
}

// fakeImage is the content of fakeSource's image v.
type fakeImage struct {
	f *fakeSource
	v string
}

func (fi fakeImage) Config(context.Context) (snapshot.Config, error) {
	var c snapshot.Config
	if a := fi.f.arch[fi.v]; a != "" {
		c.OCI.OS, c.OCI.Architecture = "linux", a
	}
	return c, nil
}

func (fi fakeImage) Layers(context.Context) ([]snapshot.Layer, error) {
	fi.f.imports++
	if fi.f.broken[fi.v] {
		return nil, fmt.Errorf("layer of %s: %w", fi.v, snapshot.ErrDigestMismatch)
	}
	return []snapshot.Layer{versionLayer(fi.v)}, nil
}

// versionLayer is a rootfs whose /etc/version says v.
type versionLayer string

func (versionLayer) DiffID() digest.Digest { return "" }
func (versionLayer) Blob() digest.Digest   { return "" }

func (v versionLayer) Open(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(versionTar(string(v)))), nil
}

// versionTar is a rootfs tar stream whose /etc/version says v.
func versionTar(v string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Name: "etc/version", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(v)), ModTime: mt})
	tw.Write([]byte(v))
	tw.Close()
	return buf.Bytes()
}

func TestPrepare(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2"}}

	p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{})
	if err != nil || p.Change != Imported || p.Generation != 1 {
		t.Fatalf("first prepare: %+v %v", p, err)
	}
	p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{})
	if err != nil || p.Change != Unchanged || p.Generation != 1 || src.imports != 1 {
		t.Fatalf("cache-hit prepare: %+v %v (imports %d)", p, err, src.imports)
	}
	p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{})
	if err != nil || p.Change != Imported || p.Generation != 2 {
		t.Fatalf("upgrade: %+v %v", p, err)
	}
	src.pullErr = errors.New("registry down")
	if _, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{Pull: true}); err != nil || !strings.Contains(logs.String(), "pull failed") {
		t.Fatalf("failed pull must warn and carry on: %v, log %q", err, logs.String())
	}
	// A registry down on --pull while its ref cache still resolves: the
	// machine keeps its tree, with one warning, as when Docker is down.
	logs.Reset()
	src.pullErr = fmt.Errorf("registry 127.0.0.1:1: %w", snapshot.ErrUnreachable)
	p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{Pull: true})
	if err != nil || p.Change != FromCache || p.Digest != digest.FromString("v2") || strings.Count(logs.String(), "level=WARN") != 1 || !strings.Contains(logs.String(), "127.0.0.1:1") {
		t.Fatalf("pull unreachable with a cached tree: %+v %v, log %q", p, err, logs.String())
	}
	// A new machine has no tree to keep: the resolved image is used.
	if p, err = Prepare(ctx, s, src, log, "new", daemonRef("app:2"), PrepareOptions{Pull: true}); err != nil || p.Change != Activated {
		t.Fatalf("pull unreachable for a new machine: %+v %v", p, err)
	}
	src.pullErr = nil
	src.down = true
	p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{})
	if err != nil || p.Change != FromCache || p.Digest != digest.FromString("v2") || p.Generation != 2 || p.String() != "generation 2 "+p.Digest.String()+" (cached, fake unreachable)" {
		t.Fatalf("daemon down with a cached tree: %+v %v", p, err)
	}
	if _, err = Prepare(ctx, s, src, log, "other", daemonRef("app:2"), PrepareOptions{}); !errors.Is(err, snapshot.ErrUnreachable) || !strings.Contains(err.Error(), "other") {
		t.Fatalf("daemon down without a cached tree: %v", err)
	}
	if _, err = Prepare(ctx, s, src, log, "-x", daemonRef("app:2"), PrepareOptions{}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}

// simulateRun does what `run` then `report` record for one run of machine
// name that lasted up and ended with r.
func simulateRun(t *testing.T, s *cache.Store, name string, up time.Duration, r RunResult) index.Generation {
	t.Helper()
	now := time.Now()
	if _, err := updateCurrent(s, name, func(g *index.Generation) { g.Starts++; g.LastStart = now.Add(-up) }); err != nil {
		t.Fatal(err)
	}
	g, _, err := Report(s, name, r, DefaultHealthyAfter, now)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestCrashLoopRollsBack(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2"}}
	fail := RunResult{ServiceResult: "exit-code", ExitCode: "exited", ExitStatus: "1"}
	ok := RunResult{ServiceResult: "success", ExitCode: "exited", ExitStatus: "0"}

	if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	if g := simulateRun(t, s, "m", time.Minute, ok); !Healthy(g, DefaultHealthyAfter) || g.Starts != 1 {
		t.Fatalf("a one-minute run did not make generation 1 healthy: %+v", g)
	}
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{}); err != nil || p.Generation != 2 {
		t.Fatalf("upgrade: %+v %v", p, err)
	}
	// Two failures are not yet a loop.
	for i := 0; i < 2; i++ {
		simulateRun(t, s, "m", time.Second, fail)
		p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{})
		if err != nil || p.Change != Unchanged || p.Generation != 2 {
			t.Fatalf("after %d failures: %+v %v", i+1, p, err)
		}
	}
	g := simulateRun(t, s, "m", time.Second, fail)
	if g.Failures != 3 || g.LastResult != "exit-code exited 1" {
		t.Fatalf("third failure recorded as %+v", g)
	}
	p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{})
	if err != nil || p.Change != RolledBackDeclined || p.Digest != digest.FromString("v1") || p.Generation != 1 {
		t.Fatalf("crash loop: %+v %v", p, err)
	}
	if !strings.Contains(logs.String(), "rolled back a crash-looping generation") {
		t.Errorf("no warning logged: %s", logs.String())
	}
	assertCurrent(t, s, "m", digest.FromString("v1"), "v1")
	// The bad digest stays declined while the ref still names it.
	if p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{}); err != nil || p.Change != Declined || p.Generation != 1 {
		t.Fatalf("second prepare of the failed digest: %+v %v", p, err)
	}
	gens, m, _ := History(s, "m")
	if HealthOf(m, gens[1], DefaultHealthyAfter) != "failed" || HealthOf(m, gens[0], DefaultHealthyAfter) != "healthy" {
		t.Errorf("health labels: %q %q", HealthOf(m, gens[0], DefaultHealthyAfter), HealthOf(m, gens[1], DefaultHealthyAfter))
	}
	// A new digest behind the ref is tried.
	src.images["app:2"] = "v2-fixed"
	if p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{}); err != nil || p.Change != Imported || p.Digest != digest.FromString("v2-fixed") {
		t.Fatalf("fixed image: %+v %v", p, err)
	}
	// --force brings the failed digest back.
	src.images["app:2"] = "v2"
	if p, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{Force: true}); err != nil || p.Change != Activated || p.Digest != digest.FromString("v2") {
		t.Fatalf("--force: %+v %v", p, err)
	}
	if _, m, _ = History(s, "m"); len(m.Failed) != 0 {
		t.Errorf("--force left the digest marked failed: %v", m.Failed)
	}
}

func TestCrashLoopWithoutHealthyGeneration(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:1": "v1"}}
	Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{})
	for i := 0; i < 3; i++ {
		simulateRun(t, s, "m", time.Second, RunResult{ServiceResult: "signal", ExitCode: "killed", ExitStatus: "SEGV"})
	}
	p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{})
	if err != nil || p.Change != Unchanged || p.Generation != 1 {
		t.Fatalf("nothing to roll back to: %+v %v", p, err)
	}
	if !strings.Contains(logs.String(), "no healthy generation") {
		t.Errorf("no warning: %s", logs.String())
	}
	// A long run that fails is not part of a loop.
	if g := simulateRun(t, s, "m", 2*time.Minute, RunResult{ServiceResult: "exit-code", ExitStatus: "1"}); g.Failures != 0 {
		t.Errorf("a long failed run counted as a crash: %+v", g)
	}
}

// TestLinkMachine links plain trees (TestLinkMachineStack: stacks, which
// it mounts).
func TestLinkMachine(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	// Plain trees with /usr: LinkMachine mounts a stack, or a tree
	// without /usr, instead of linking it (TestLinkMachineStack,
	// TestLinkMachineScratch).
	tree := func(v string) digest.Digest {
		return storetest.ImportPlain(t, s, "", storetest.File{Name: "etc/version", Content: v}, storetest.File{Name: "usr/x"})
	}
	d1, d2 := tree("v1"), tree("v2")
	dir := filepath.Join(t.TempDir(), "machines")
	Activate(ctx, s, "m", d1, "", "test")
	if err := LinkMachine(s, "m", dir); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "m", "etc", "version"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if read() != "v1" {
		t.Fatal("link does not reach the current tree")
	}
	Activate(ctx, s, "m", d2, "", "test")
	if read() != "v2" {
		t.Fatal("link does not follow a flip")
	}
	if err := LinkMachine(s, "m", dir); err != nil {
		t.Fatalf("linking again: %v", err)
	}
	os.Mkdir(filepath.Join(dir, "theirs"), 0o755)
	if err := LinkMachine(s, "theirs", dir); !errors.Is(err, cache.ErrExists) {
		t.Fatalf("replaced a real directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("%s holds %v", dir, ents)
	}
}

// TestManualRollbackHolds (issue 18 item 7): after `rollback`, the
// restart that applies it runs prepare of the same reference, which must
// not activate the digest the operator rolled away from; a new digest
// behind the reference, or --force, is taken again, and an explicit
// activation or rollback to the declined digest forgives it.
func TestManualRollbackHolds(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:stable": "v1"}}
	v1, v2, v3 := digest.FromString("v1"), digest.FromString("v2"), digest.FromString("v3")
	if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	src.images["app:stable"] = "v2"
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil || p.Digest != v2 {
		t.Fatalf("upgrade: %+v %v", p, err)
	}
	if g, err := Rollback(ctx, s, "m", ""); err != nil || g.Digest != v1 {
		t.Fatalf("rollback: %+v %v", g, err)
	}
	_, m, _ := History(s, "m")
	if DeclinedWhy(m, v2) != ManualRollback || DeclinedWhy(m, v1) != "" || m.Image != "app:stable" {
		t.Fatalf("after the rollback the record is %+v", m)
	}
	// The restart that applies the rollback.
	p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{Pull: true})
	if err != nil || p.Change != Declined || p.Digest != v1 {
		t.Fatalf("prepare after a manual rollback: %+v %v", p, err)
	}
	assertCurrent(t, s, "m", v1, "v1")
	if !strings.Contains(logs.String(), ManualRollback) {
		t.Errorf("the decline does not say why: %s", logs.String())
	}
	gens, m, _ := History(s, "m")
	if h := HealthOf(m, gens[1], DefaultHealthyAfter); h != "failed" {
		t.Errorf("history labels the generation rolled away from %q", h)
	}
	// The reference moves on: the new digest is taken.
	src.images["app:stable"] = "v3"
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil || p.Change != Imported || p.Digest != v3 {
		t.Fatalf("a new digest after the rollback: %+v %v", p, err)
	}
	// Back to v2 by hand: v3 is declined now, v2 no longer.
	src.images["app:stable"] = "v2"
	if g, err := Rollback(ctx, s, "m", v2.String()); err != nil || g.Digest != v2 {
		t.Fatalf("rollback --to v2: %+v %v", g, err)
	}
	_, m, _ = History(s, "m")
	if DeclinedWhy(m, v2) != "" || DeclinedWhy(m, v3) != ManualRollback {
		t.Fatalf("after rollback --to v2: failed %v why %v", m.Failed, m.Why)
	}
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil || p.Change != Unchanged || p.Digest != v2 {
		t.Fatalf("prepare of the digest rolled back to: %+v %v", p, err)
	}
	// --force takes the declined digest.
	src.images["app:stable"] = "v3"
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil || p.Change != Declined {
		t.Fatalf("prepare of v3 after rolling back from it: %+v %v", p, err)
	}
	if p, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{Force: true}); err != nil || p.Change != Activated || p.Digest != v3 {
		t.Fatalf("prepare --force: %+v %v", p, err)
	}
	if _, m, _ = History(s, "m"); len(m.Failed) != 0 || len(m.Why) != 0 {
		t.Errorf("--force left %v %v", m.Failed, m.Why)
	}
}
