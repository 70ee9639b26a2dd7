package activate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// TestDecideUpdate: every view Update can read for a machine, and what it
// does about it.
func TestDecideUpdate(t *testing.T) {
	v1, v2 := digest.FromString("v1"), digest.FromString("v2")
	down := errors.New("registry down")
	base := updateView{image: "app:stable", resolved: v2, running: v1, unit: "rootswap-m.service"}
	with := func(f func(*updateView)) updateView { v := base; f(&v); return v }
	for _, c := range []struct {
		name string
		view updateView
		want UpdateAction
	}{
		{"new digest, unit runs", base, RestartUnit},
		{"no image followed", with(func(v *updateView) { v.image = "" }), NoImage},
		{"source down", with(func(v *updateView) { v.resolveErr, v.resolved = down, "" }), Unresolved},
		{"source down, systemd down too", with(func(v *updateView) { v.resolveErr, v.systemdErr = down, down }), Unresolved},
		{"runs what the image names", with(func(v *updateView) { v.resolved = v1 }), UpToDate},
		{"runs it, systemd down", with(func(v *updateView) { v.resolved, v.systemdErr = v1, down }), UpToDate},
		{"new digest failed here before", with(func(v *updateView) { v.failed = []digest.Digest{v2} }), DeclineUpdate},
		{"another digest failed before", with(func(v *updateView) { v.failed = []digest.Digest{digest.FromString("v0")} }), RestartUnit},
		{"new digest, no unit runs", with(func(v *updateView) { v.unit = "" }), Fetch},
		{"new digest, systemd unreachable", with(func(v *updateView) { v.unit, v.systemdErr = "", down }), FetchOnly},
		{"declined, systemd unreachable", with(func(v *updateView) { v.failed, v.systemdErr = []digest.Digest{v2}, down }), DeclineUpdate},
		{"a machine without a tree", with(func(v *updateView) { v.running = "" }), RestartUnit},
		{"runs it, but the unit started before the flip", with(func(v *updateView) { v.resolved, v.stale = v1, true }), RestartUnit},
		{"runs it, stale, no unit runs", with(func(v *updateView) { v.resolved, v.stale, v.unit = v1, true, "" }), UpToDate},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decideUpdate(c.view); got != c.want {
				t.Errorf("decideUpdate = %s, want %s", got, c.want)
			}
		})
	}
}

// fakeSystemd runs each machine's unit as systemd would for the gate: a
// restart starts the tree the machine's link names (update flips first,
// the unit's prepare keeps it); a tree listed in crash fails after that
// many polls.
type fakeSystemd struct {
	s        *cache.Store
	crash    map[digest.Digest]int // digest → polls it stays up
	units    map[string]string     // running unit → machine
	mu       sync.Mutex
	restarts []string // units, in restart order
	polls    map[string]int
	inv      map[string]int
	failed   map[string]bool
	since    map[string]time.Time
	born     time.Time
}

func newFakeSystemd(s *cache.Store, running ...string) *fakeSystemd {
	f := &fakeSystemd{s: s, crash: map[digest.Digest]int{}, units: map[string]string{}, polls: map[string]int{}, inv: map[string]int{}, failed: map[string]bool{}, since: map[string]time.Time{}, born: time.Now()}
	for _, m := range running {
		f.units["rootswap-"+m+".service"] = m
	}
	return f
}

func (f *fakeSystemd) Close() {}

func (f *fakeSystemd) Unit(ctx context.Context, unit string) (UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name, ok := f.units[unit]
	if !ok {
		return UnitState{LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}, nil
	}
	f.polls[unit]++
	st := UnitState{LoadState: "loaded", ActiveState: "active", SubState: "running", Invocation: fmt.Sprint(f.inv[unit]), Since: f.since[unit]}
	if st.Since.IsZero() {
		st.Since = f.born
	}
	d, _ := CurrentTree(f.s, name)
	if n, bad := f.crash[d]; bad && f.polls[unit] > n {
		st.ActiveState, st.SubState, st.Result, st.ExitCode, st.ExitStatus = "activating", "auto-restart", "exit-code", 1, 3
	}
	return st, nil
}

func (f *fakeSystemd) Restart(ctx context.Context, unit string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, unit)
	f.polls[unit] = 0
	f.inv[unit]++
	f.since[unit] = time.Now()
	return "done", nil
}

// upAt is a fake systemd dialer.
func (f *fakeSystemd) dial(context.Context) (Systemd, error) { return f, nil }

func updateOpts(sd func(context.Context) (Systemd, error)) UpdateOptions {
	return UpdateOptions{HealthyAfter: 50 * time.Millisecond, Systemd: sd, poll: time.Millisecond}
}

// TestUpdate: the executor with a real store, a fake source and a fake
// systemd: fetch-only, one import for two machines, a restart that passes
// the gate, one that fails it and rolls back (stopping the rollout),
// systemd unreachable, a source down, --dry-run.
func TestUpdate(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:stable": "v1"}}
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	v1, v2, v3 := digest.FromString("v1"), digest.FromString("v2"), digest.FromString("v3")
	for _, m := range []string{"a", "b", "c"} {
		if _, err := Prepare(ctx, s, src, log, m, daemonRef("app:stable"), PrepareOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sd := newFakeSystemd(s, "a", "b") // c has no running unit
	src.images["app:stable"] = "v2"
	imports := src.imports

	// --dry-run: a plan, no import, no flip, no restart.
	res, err := Update(ctx, s, sources, log, []string{"a", "b", "c"}, UpdateOptions{DryRun: true, Systemd: sd.dial})
	if err != nil {
		t.Fatal(err)
	}
	if src.imports != imports || len(sd.restarts) != 0 || res[0].Action != RestartUnit || res[2].Action != Fetch || !strings.Contains(res[0].Done, "would fetch") {
		t.Fatalf("dry run: %+v, %d imports, restarts %v", res, src.imports-imports, sd.restarts)
	}
	assertCurrent(t, s, "a", v1, "v1")

	// Two followers restarted, one fetched; v2 imported once.
	res, err = Update(ctx, s, sources, log, []string{"c", "b", "a"}, updateOpts(sd.dial))
	if err != nil {
		t.Fatal(err)
	}
	if src.imports != imports+1 {
		t.Errorf("three machines on one image imported it %d times", src.imports-imports)
	}
	for i, want := range []string{"a: generation 2 " + v2.String() + " (updated; rootswap-a.service restarted", "b: generation 2", "c: fetched " + v2.String() + ", applies at next start"} {
		if !strings.HasPrefix(res[i].String(), want) || res[i].Failed {
			t.Errorf("result %d: %q (failed %v), want %q…", i, res[i], res[i].Failed, want)
		}
	}
	if strings.Join(sd.restarts, " ") != "rootswap-a.service rootswap-b.service" {
		t.Errorf("restarts: %v", sd.restarts)
	}
	assertCurrent(t, s, "a", v2, "v2")
	assertCurrent(t, s, "c", v1, "v1")
	gens, _, _ := History(s, "a")
	if g := gens[len(gens)-1]; g.Reason != "update" || g.Image != "app:stable" {
		t.Errorf("the update's generation: %+v", g)
	}

	// v3 crashes after the gate's first look: a is rolled back at once,
	// b is skipped.
	src.images["app:stable"] = "v3"
	sd.crash[v3] = 1
	sd.restarts = nil
	res, err = Update(ctx, s, sources, log, []string{"a", "b"}, updateOpts(sd.dial))
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Failed || !strings.Contains(res[0].Done, "rolled back to generation 2 "+v2.String()) || !strings.Contains(res[0].Done, "exit status 3") {
		t.Errorf("failed gate: %+v", res[0])
	}
	if !res[1].Failed || !strings.Contains(res[1].Done, "skipped: the rollout stopped after a failed") {
		t.Errorf("the machine after the failed one: %+v", res[1])
	}
	assertCurrent(t, s, "a", v2, "v2")
	assertCurrent(t, s, "b", v2, "v2")
	if strings.Join(sd.restarts, " ") != "rootswap-a.service rootswap-a.service" {
		t.Errorf("restarts: %v (want a's update and its rollback)", sd.restarts)
	}
	_, ma, _ := History(s, "a")
	if why := DeclinedWhy(ma, v3); !strings.HasPrefix(why, "update health gate: ") {
		t.Errorf("a declines v3 because %q", why)
	}
	if !strings.Contains(logs.String(), "update failed its health gate") || !strings.Contains(logs.String(), "machine=a") {
		t.Errorf("no warning naming the machine: %s", logs.String())
	}
	// The next update declines v3 on a; prepare does too.
	sd.restarts = nil
	res, _ = Update(ctx, s, sources, log, []string{"a"}, updateOpts(sd.dial))
	if res[0].Action != DeclineUpdate || res[0].Failed || len(sd.restarts) != 0 {
		t.Errorf("update after the rollback: %+v, restarts %v", res[0], sd.restarts)
	}
	if p, err := Prepare(ctx, s, src, log, "a", daemonRef("app:stable"), PrepareOptions{}); err != nil || p.Change != Declined {
		t.Errorf("prepare after the rollback: %+v %v", p, err)
	}

	// An update killed between its flip and its restart: the link names
	// the new tree, the unit still runs the old one. The next update
	// restarts it, and a failed gate goes back to what ran.
	src.images["app:stable"] = "v2"
	if _, _, err := Activate(ctx, s, "b", v3, "app:stable", "update"); err != nil {
		t.Fatal(err)
	}
	src.images["app:stable"] = "v3"
	sd.restarts = nil
	res, _ = Update(ctx, s, sources, log, []string{"b"}, updateOpts(sd.dial))
	if res[0].Action != RestartUnit || !strings.Contains(res[0].Done, "rolled back to generation 2 "+v2.String()) || len(sd.restarts) != 2 {
		t.Errorf("update after a kill between flip and restart: %+v, restarts %v", res[0], sd.restarts)
	}
	assertCurrent(t, s, "b", v2, "v2")

	// systemd unreachable: fetched, not restarted.
	src.images["app:stable"] = "v4"
	noBus := func(context.Context) (Systemd, error) { return nil, errors.New("systemd unreachable: no bus") }
	res, _ = Update(ctx, s, sources, log, []string{"b"}, updateOpts(noBus))
	if res[0].Action != FetchOnly || res[0].Failed || !strings.Contains(res[0].Done, "restart not done: systemd unreachable") {
		t.Errorf("without systemd: %+v", res[0])
	}
	assertCurrent(t, s, "b", v2, "v2")

	// The source down: a failure, nothing restarted.
	src.down = true
	sd.restarts = nil
	res, _ = Update(ctx, s, sources, log, []string{"b"}, updateOpts(sd.dial))
	if res[0].Action != Unresolved || !res[0].Failed || len(sd.restarts) != 0 || !strings.Contains(res[0].Done, "nothing restarted") {
		t.Errorf("source down: %+v, restarts %v", res[0], sd.restarts)
	}
	if _, err := Update(ctx, s, sources, log, []string{"nope"}, updateOpts(sd.dial)); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("unknown machine: %v", err)
	}
}

// TestUpdateOptIn: without names, update updates the machines that opted
// in, and only those.
func TestUpdateOptIn(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	src := &fakeSource{images: map[string]string{"app:1": "v1"}}
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	for _, m := range []string{"in", "out"} {
		if _, err := Prepare(ctx, s, src, log, m, daemonRef("app:1"), PrepareOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := SetAutoUpdate(s, "in", "app:1", true); err != nil {
		t.Fatal(err)
	}
	// A machine declared before its first start: the store checks clean.
	if err := SetAutoUpdate(s, "fresh", "app:1", true); err != nil {
		t.Fatal(err)
	}
	res, err := Update(ctx, s, sources, log, nil, UpdateOptions{DryRun: true, Systemd: newFakeSystemd(s).dial})
	if err != nil || len(res) != 2 || res[0].Name != "fresh" || res[1].Name != "in" || res[1].Action != UpToDate || res[0].Action != Fetch {
		t.Fatalf("update without names: %+v %v", res, err)
	}
	if p, err := Prepare(ctx, s, src, log, "fresh", daemonRef("app:1"), PrepareOptions{}); err != nil || p.Generation != 1 {
		t.Fatalf("first prepare of a declared machine: %+v %v", p, err)
	}
	if _, m, _ := History(s, "fresh"); !m.AutoUpdate || m.Image != "app:1" {
		t.Errorf("the first prepare lost the opt-in: %+v", m)
	}
}

// TestUpdateRecordsRefOnceStored: update records a reference its source
// resolved afresh only once the image's tree is stored; an import that
// fails leaves the record where it was.
func TestUpdateRecordsRefOnceStored(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.DiscardHandler)
	src := &fakeSource{images: map[string]string{"app:stable": "v1"}, record: true, broken: map[string]bool{"v2": true}}
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:stable"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	recorded := func() digest.Digest {
		t.Helper()
		d, _, _, err := s.LookupRef("app:stable")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sd := newFakeSystemd(s)
	src.images["app:stable"] = "v2"
	res, err := Update(ctx, s, sources, log, []string{"m"}, updateOpts(sd.dial))
	if err != nil || len(res) != 1 || !res[0].Failed {
		t.Fatalf("update to a broken image: %+v, %v; want a failed result", res, err)
	}
	if got := recorded(); got != digest.FromString("v1") {
		t.Fatalf("after a failed import the ref is recorded at %q, want still v1's", got)
	}
	src.broken = nil
	if res, err = Update(ctx, s, sources, log, []string{"m"}, updateOpts(sd.dial)); err != nil || res[0].Failed {
		t.Fatalf("update: %+v, %v", res, err)
	}
	if got := recorded(); got != digest.FromString("v2") {
		t.Fatalf("after the import the ref is recorded at %q, want v2's", got)
	}
}

// TestUpdateMaxParallel: --max-parallel 2 restarts machines two at a
// time; a failed gate in the first batch lets its batch finish and skips
// the next; a manual rollback's digest is declined by update as by
// prepare.
func TestUpdateMaxParallel(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	src := &fakeSource{images: map[string]string{"app:1": "v1", "bad:1": "v1"}}
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	names := []string{"a", "b", "c", "d"}
	for _, m := range names {
		ref := "app:1"
		if m == "a" {
			ref = "bad:1"
		}
		if _, err := Prepare(ctx, s, src, log, m, daemonRef(ref), PrepareOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sd := newFakeSystemd(s, names...)
	src.images["app:1"], src.images["bad:1"] = "v2", "v2-bad"
	sd.crash[digest.FromString("v2-bad")] = 1
	opt := updateOpts(sd.dial)
	opt.MaxParallel = 2
	res, err := Update(ctx, s, sources, log, nil, opt) // none opted in
	if err != nil || len(res) != 0 {
		t.Fatalf("no names, none opted in: %+v %v", res, err)
	}
	res, err = Update(ctx, s, sources, log, names, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Failed || !strings.Contains(res[0].Done, "rolled back") || res[1].Failed || !strings.Contains(res[1].Done, "updated") {
		t.Errorf("the first batch: %q, %q", res[0], res[1])
	}
	for _, r := range res[2:] {
		if !r.Failed || !strings.Contains(r.Done, "skipped: the rollout stopped after a failed") {
			t.Errorf("the second batch: %q", r)
		}
	}
	if len(sd.restarts) != 3 { // a, b, a's rollback
		t.Errorf("restarts %v, want a, b and a's rollback", sd.restarts)
	}
	assertCurrent(t, s, "b", digest.FromString("v2"), "v2")
	assertCurrent(t, s, "c", digest.FromString("v1"), "v1")

	// A manual rollback on b: update declines what b left.
	if _, err := Rollback(ctx, s, "b", ""); err != nil {
		t.Fatal(err)
	}
	res, _ = Update(ctx, s, sources, log, []string{"b"}, opt)
	if res[0].Action != DeclineUpdate || !strings.Contains(res[0].Done, ManualRollback) {
		t.Errorf("update after a manual rollback: %+v", res[0])
	}
}

// TestUpdatePlatform: update refuses an image for another platform, as
// prepare does, unless --platform names that platform.
func TestUpdatePlatform(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.DiscardHandler)
	src := &fakeSource{images: map[string]string{"app:stable": "v1"}, arch: map[string]string{"v2": "riscv64"}}
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	if _, err := Prepare(ctx, s, src, log, "a", daemonRef("app:stable"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	src.images["app:stable"] = "v2"
	res, err := Update(ctx, s, sources, log, []string{"a"}, UpdateOptions{Systemd: noSystemd})
	if err == nil && (len(res) != 1 || !res[0].Failed || !strings.Contains(res[0].String(), "riscv64")) {
		t.Errorf("update to a riscv64 image: %+v, %v; want machine a failed naming the platform", res, err)
	}
	stored := func() bool {
		_, ok, err := snapshot.Lookup(s, digest.FromString("v2"))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if stored() {
		t.Errorf("the refused riscv64 image was stored")
	}
	assertCurrent(t, s, "a", digest.FromString("v1"), "v1")
	// No systemd here: --platform fetches it, and the restart is not done.
	res, err = Update(ctx, s, sources, log, []string{"a"}, UpdateOptions{Platform: "linux/riscv64", Systemd: noSystemd})
	if err != nil || len(res) != 1 || !stored() {
		t.Fatalf("update --platform linux/riscv64: %+v, %v, stored %v", res, err, stored())
	}
}

// noSystemd is a systemd that cannot be reached, as without D-Bus.
func noSystemd(context.Context) (Systemd, error) { return nil, errors.New("no D-Bus here") }
