package gc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

func activateTree(t testing.TB, s *cache.Store, name string, d digest.Digest) {
	t.Helper()
	if _, _, err := activate.Activate(context.Background(), s, name, d, "", "test"); err != nil {
		t.Fatal(err)
	}
}

func collect(t testing.TB, s *cache.Store, opt Options) Result {
	t.Helper()
	rep, err := Collect(context.Background(), s, opt)
	if err != nil {
		t.Fatalf("gc %+v: %v", opt, err)
	}
	return rep
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func indexed(t testing.TB, s *cache.Store, d digest.Digest) bool {
	t.Helper()
	err := s.View(func(tx *index.Tx) error { _, err := tx.Tree(d); return err })
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func treeDigests(rep Result) []digest.Digest {
	out := []digest.Digest{}
	for _, t := range rep.Trees {
		out = append(out, t.Digest)
	}
	return out
}

func keptWhy(rep Result, d digest.Digest) string {
	for _, k := range rep.Kept {
		if k.Digest == d {
			return k.Why
		}
	}
	return ""
}

// versions are four releases of one image: a shared library and config
// that never change, and an application binary (with a hard link to it
// and an empty marker) that changes every time.
func versions(t testing.TB, s *cache.Store) (ds []digest.Digest, unique []string) {
	return importVersions(t, s, storetest.Import)
}

// plainVersions are versions as plain trees, as a store written before
// stacks holds them.
func plainVersions(t testing.TB, s *cache.Store) (ds []digest.Digest, unique []string) {
	return importVersions(t, s, storetest.ImportPlain)
}

func importVersions(t testing.TB, s *cache.Store, imp func(testing.TB, *cache.Store, string, ...storetest.File) digest.Digest) (ds []digest.Digest, unique []string) {
	t.Helper()
	for v := 1; v <= 4; v++ {
		app := strings.Repeat(fmt.Sprintf("v%d", v), 1000*v)
		unique = append(unique, app)
		ds = append(ds, imp(t, s, fmt.Sprintf("web:v%d", v),
			storetest.File{Name: "usr/lib/libshared.so", Content: strings.Repeat("shared", 500)},
			storetest.File{Name: "etc/app.conf", Content: "listen 80\n"},
			storetest.File{Name: "usr/bin/app", Content: app},
			storetest.File{Name: "usr/bin/app-alias", Link: "usr/bin/app"},
			storetest.File{Name: "var/empty-marker"},
		))
	}
	return ds, unique
}

func TestKeepThreeGenerations(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	ds, unique := versions(t, s)
	for _, d := range ds {
		activateTree(t, s, "web", d)
	}
	v1Objects := storetest.ManifestObjects(t, s, ds[0])
	v2Objects := storetest.ManifestObjects(t, s, ds[1])

	rep := collect(t, s, Options{Keep: 3})

	if got := treeDigests(rep); !reflect.DeepEqual(got, []digest.Digest{ds[0]}) {
		t.Fatalf("removed trees %v, want only v1 %s", got, ds[0])
	}
	if rep.Trees[0].Reason != "unreachable" {
		t.Errorf("v1 removed as %q, want unreachable", rep.Trees[0].Reason)
	}
	// v1's only unique content is its app binary (the alias is a second
	// name for it, the marker is empty).
	if rep.Objects != 1 || rep.BytesFreed != int64(len(unique[0])) {
		t.Errorf("freed %d objects, %d bytes; want 1 object, %d bytes (v1's app)", rep.Objects, rep.BytesFreed, len(unique[0]))
	}
	if exists(s.TreePath(ds[0])) || exists(s.ManifestPath(ds[0])) || indexed(t, s, ds[0]) {
		t.Errorf("v1's tree, manifest or record survived")
	}
	if exists(s.TreeLockPath(ds[0])) || !exists(s.TreeLockPath(ds[1])) {
		t.Errorf("lock files: v1's exists %v (want false), v2's %v (want true)", exists(s.TreeLockPath(ds[0])), exists(s.TreeLockPath(ds[1])))
	}
	for _, obj := range v1Objects {
		shared := false
		for _, o := range v2Objects {
			shared = shared || o == obj
		}
		if exists(s.ObjectPath(obj)) != shared {
			t.Errorf("object %s (shared with v2: %v) exists: %v", obj, shared, !shared)
		}
	}
	for _, d := range ds[1:] {
		if !exists(s.TreePath(d)) || !indexed(t, s, d) {
			t.Errorf("kept tree %s is gone", d)
		}
	}
	if why := keptWhy(rep, ds[3]); !strings.Contains(why, "machine web: current") {
		t.Errorf("v4 kept because %q, want the machine's current", why)
	}

	// Two rollbacks are always possible, and they reach working trees.
	for i, want := range []digest.Digest{ds[2], ds[1]} {
		g, err := activate.Rollback(ctx, s, "web", "")
		if err != nil {
			t.Fatalf("rollback %d: %v", i+1, err)
		}
		_, cur, err := activate.TreeFor(s, "web")
		if err != nil || g.Digest != want || cur != want {
			t.Fatalf("rollback %d: at %s (%v), want %s", i+1, cur, err, want)
		}
		app, err := os.ReadFile(filepath.Join(storetest.Tree(t, s, cur), "usr/bin/app"))
		if err != nil || string(app) != unique[2-i] {
			t.Errorf("rollback %d: app binary unreadable or wrong: %v", i+1, err)
		}
	}
	// The third would need v1, which gc has removed.
	if _, err := activate.Rollback(ctx, s, "web", ""); !errors.Is(err, activate.ErrNoGeneration) {
		t.Errorf("third rollback: %v, want an error wrapping ErrNoGeneration", err)
	}

	// A second run finds nothing more: the current tree is now v2, and
	// v2..v4 are still the three newest generations.
	if rep := collect(t, s, Options{Keep: 3}); len(rep.Trees) != 0 || rep.Objects != 0 {
		t.Errorf("second gc removed %v and %d objects", treeDigests(rep), rep.Objects)
	}
}

func TestPin(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	ds, _ := versions(t, s)
	activateTree(t, s, "web", ds[1])

	if err := Pin(ctx, s, ds[0]); err != nil {
		t.Fatal(err)
	}
	if err := Pin(ctx, s, ds[0]); err != nil {
		t.Fatalf("pinning twice: %v", err)
	}
	rep := collect(t, s, Options{Keep: 3})
	if why := keptWhy(rep, ds[0]); why != "pinned" {
		t.Errorf("pinned v1 kept because %q, want pinned (removed: %v)", why, treeDigests(rep))
	}
	if !exists(s.TreePath(ds[0])) {
		t.Fatal("pinned tree removed")
	}
	if got := treeDigests(rep); !reflect.DeepEqual(got, []digest.Digest{ds[2], ds[3]}) {
		t.Errorf("removed %v, want v3 and v4 (never activated)", got)
	}

	if was, err := Unpin(ctx, s, ds[0]); err != nil || !was {
		t.Fatalf("unpin: %v, %v", was, err)
	}
	if was, err := Unpin(ctx, s, ds[0]); err != nil || was {
		t.Fatalf("second unpin: %v, %v; want false, nil", was, err)
	}
	rep = collect(t, s, Options{Keep: 3})
	if got := treeDigests(rep); !reflect.DeepEqual(got, []digest.Digest{ds[0]}) {
		t.Errorf("after unpin removed %v, want v1", got)
	}

	missing := digest.FromString("no such tree")
	if err := Pin(ctx, s, missing); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("pin of a missing tree: %v, want ErrNotFound", err)
	}
	if err := Pin(ctx, s, ds[0]); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("pin of a collected tree: %v, want ErrNotFound", err)
	}
}

// listing is everything about a store directory a change could touch.
func listing(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("ino %d nlink %d size %d mode %v mtime %d", st.Ino, st.Nlink, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			v += " -> " + target
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// crashedGC leaves what a gc killed between renaming tree d into its
// staging and removing it: no record, the tree in tmp/ under a lock no
// process holds, the manifest still in place.
func crashedGC(t testing.TB, s *cache.Store, d digest.Digest) {
	t.Helper()
	if err := s.Update(func(tx *index.Tx) error { return tx.DeleteTree(d) }); err != nil {
		t.Fatal(err)
	}
	id := "gc-999999-deadbeef0000"
	if err := os.WriteFile(filepath.Join(s.TmpDir(), id+".lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.TmpDir(), id), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.TreePath(d), filepath.Join(s.TmpDir(), id, d.Encoded())); err != nil {
		t.Fatal(err)
	}
}

func TestDryRunChangesNothingAndMatchesTheRun(t *testing.T) {
	s := storetest.New(t)
	ds, _ := versions(t, s)
	for _, d := range ds[1:] {
		activateTree(t, s, "web", d)
	}
	crashedGC(t, s, ds[0])
	loose := storetest.Import(t, s, "loose", storetest.File{Name: "only-here", Content: "loose content"})
	if err := s.Update(func(tx *index.Tx) error {
		return tx.PutLease(index.Lease{ID: "import-1-dead", Expires: time.Now().Add(-time.Hour)})
	}); err != nil {
		t.Fatal(err)
	}

	before := listing(t, s.Root())
	plan := collect(t, s, Options{Keep: 2, DryRun: true})
	after := listing(t, s.Root())
	for p, v := range before {
		if after[p] != v {
			t.Errorf("dry run changed %s:\n was %s\n now %s", p, v, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("dry run created %s", p)
		}
	}
	if !plan.DryRun || len(plan.Trees) == 0 || plan.Objects == 0 || plan.Staging != 1 || plan.Leases != 1 {
		t.Fatalf("dry run planned too little to prove anything: %+v", plan)
	}
	if got, want := treeDigests(plan), sorted(ds[1], loose); !reflect.DeepEqual(got, want) {
		t.Errorf("plan removes %v, want v2 (beyond keep 2) and the loose tree %v", got, want)
	}

	rep := collect(t, s, Options{Keep: 2})
	plan.DryRun = false
	if !reflect.DeepEqual(rep, plan) {
		t.Errorf("the run differs from its dry run:\n run %+v\nplan %+v", rep, plan)
	}
	if again := collect(t, s, Options{Keep: 2, DryRun: true}); len(again.Trees) != 0 || again.Objects != 0 || again.Staging != 0 || again.Leases != 0 {
		t.Errorf("after the run, a dry run still plans %+v", again)
	}
}

func sorted(ds ...digest.Digest) []digest.Digest {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

func TestCrashesAreFinishedByTheNextRun(t *testing.T) {
	s := storetest.New(t)
	ds, unique := versions(t, s)
	activateTree(t, s, "web", ds[3])
	v1Objects := storetest.ManifestObjects(t, s, ds[0])
	v2Objects := storetest.ManifestObjects(t, s, ds[1])

	// v1: killed between renaming the tree into staging and removing it.
	crashedGC(t, s, ds[0])
	// v2: killed after the index transaction, before the rename.
	if err := s.Update(func(tx *index.Tx) error { return tx.DeleteTree(ds[1]) }); err != nil {
		t.Fatal(err)
	}
	// v3: the symlink points at it but the record is gone; it must stay.
	activateTree(t, s, "db", ds[2])
	var v3 index.Tree
	if err := s.Update(func(tx *index.Tx) (err error) {
		if v3, err = tx.Tree(ds[2]); err != nil {
			return err
		}
		return tx.DeleteTree(ds[2])
	}); err != nil {
		t.Fatal(err)
	}
	// An object nothing links, as a run killed before its last step leaves,
	// and a file in objects/ that is no object at all.
	orphan := digest.FromString("orphan")
	if err := os.WriteFile(s.ObjectPath(orphan), []byte("orphan!"), 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(filepath.Dir(s.ObjectPath(orphan)), "not-a-digest")
	if err := os.WriteFile(junk, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	rep := collect(t, s, Options{Keep: 0})

	if got, want := treeDigests(rep), []digest.Digest{ds[1]}; !reflect.DeepEqual(got, want) {
		t.Errorf("removed trees %v, want v2 %v", got, want)
	} else if rep.Trees[0].Reason != "unindexed" {
		t.Errorf("v2 removed as %q, want unindexed", rep.Trees[0].Reason)
	}
	if rep.Staging != 1 {
		t.Errorf("removed %d staging dirs, want the crashed gc's", rep.Staging)
	}
	// v1's app, v2's app and the orphan.
	if want := int64(len(unique[0]) + len(unique[1]) + len("orphan!")); rep.Objects != 3 || rep.BytesFreed != want {
		t.Errorf("freed %d objects, %d bytes; want 3, %d", rep.Objects, rep.BytesFreed, want)
	}
	for _, d := range ds[:2] {
		if exists(s.TreePath(d)) || exists(s.ManifestPath(d)) {
			t.Errorf("tree or manifest of %s survived", d)
		}
	}
	for _, obj := range append(v1Objects, v2Objects...) {
		if fi, err := os.Lstat(s.ObjectPath(obj)); err == nil && fi.Sys().(*syscall.Stat_t).Nlink < 2 {
			t.Errorf("object %s survived with no tree linking it", obj)
		}
	}
	if !exists(s.TreePath(ds[2])) || keptWhy(rep, ds[2]) != "machine db: current" {
		t.Errorf("unindexed tree a symlink points at: exists %v, kept because %q", exists(s.TreePath(ds[2])), keptWhy(rep, ds[2]))
	}
	if exists(s.ObjectPath(orphan)) || !exists(junk) {
		t.Errorf("orphan object exists %v (want false), junk exists %v (want true)", exists(s.ObjectPath(orphan)), exists(junk))
	}
	if ents, _ := os.ReadDir(s.TmpDir()); len(ents) != 0 {
		t.Errorf("tmp/ not empty: %v", ents)
	}
	os.Remove(junk)
	// Put db's record back so the consistency check at cleanup holds.
	if err := s.Update(func(tx *index.Tx) error { return tx.PutTree(v3) }); err != nil {
		t.Fatal(err)
	}
}

func TestLeases(t *testing.T) {
	s := storetest.New(t)
	now := time.Now()
	err := s.Update(func(tx *index.Tx) error {
		if err := tx.PutLease(index.Lease{ID: "import-1-expired", Expires: now.Add(-time.Second)}); err != nil {
			return err
		}
		return tx.PutLease(index.Lease{ID: "import-2-unexpired", Expires: now.Add(time.Hour)})
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := collect(t, s, Options{Keep: 3, Now: now})
	var left []string
	s.View(func(tx *index.Tx) error {
		ls, err := tx.Leases()
		for _, l := range ls {
			left = append(left, l.ID)
		}
		return err
	})
	if rep.Leases != 1 || !reflect.DeepEqual(left, []string{"import-2-unexpired"}) {
		t.Errorf("dropped %d leases, left %v; want the expired one dropped", rep.Leases, left)
	}
	// The unexpired lease is the test's own: it ends with it.
	if err := s.Update(func(tx *index.Tx) error { return tx.DeleteLease("import-2-unexpired") }); err != nil {
		t.Fatal(err)
	}
}

func TestUnusedFor(t *testing.T) {
	s := storetest.New(t)
	ds, _ := versions(t, s)
	err := s.Update(func(tx *index.Tx) error {
		tr, err := tx.Tree(ds[0])
		if err != nil {
			return err
		}
		tr.LastUsed = time.Now().Add(-48 * time.Hour)
		return tx.PutTree(tr)
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := collect(t, s, Options{Keep: 3, UnusedFor: 24 * time.Hour})
	if got := treeDigests(rep); !reflect.DeepEqual(got, []digest.Digest{ds[0]}) {
		t.Errorf("removed %v, want only v1, unused for 48h", got)
	}
	if why := keptWhy(rep, ds[1]); !strings.Contains(why, "within --unused-for") {
		t.Errorf("v2 kept because %q", why)
	}
}

// TestInUseByCwd runs a real process inside a plain tree (as imported
// before stacks) no machine points at. (A stack is used through its
// overlay mount, which the mount table shows.)
func TestInUseByCwd(t *testing.T) {
	s := storetest.New(t)
	ds, _ := plainVersions(t, s)
	activateTree(t, s, "web", ds[1])
	cmd := exec.Command("sleep", "60")
	cmd.Dir = filepath.Join(s.TreePath(ds[0]), "usr", "bin")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			cmd.Process.Kill()
			cmd.Wait()
			stopped = true
		}
	}
	t.Cleanup(stop)

	rep := collect(t, s, Options{Keep: 3})
	want := fmt.Sprintf("in use: pid %d (sleep) cwd %s", cmd.Process.Pid, cmd.Dir)
	if why := keptWhy(rep, ds[0]); why != want {
		t.Errorf("v1 kept because %q, want %q", why, want)
	}
	if !exists(s.TreePath(ds[0])) {
		t.Fatal("a tree a process works in was removed")
	}
	stop()
	rep = collect(t, s, Options{Keep: 3})
	if keptWhy(rep, ds[0]) != "" || exists(s.TreePath(ds[0])) {
		t.Errorf("v1 still kept after its process ended: %q", keptWhy(rep, ds[0]))
	}
}

// TestInUseByMount mounts trees the way systemd-nspawn does, in a private
// mount namespace, and checks gc sees them.
func TestInUseByMount(t *testing.T) {
	for _, tc := range []struct {
		name, mount, want string
	}{
		{"overlay", "mount -t overlay overlay -o lowerdir=$TREE,upperdir=$WORK/u,workdir=$WORK/w $WORK/m", "overlay lowerdir="},
		{"bind", "mount --bind $TREE/usr $WORK/m", "bind mount of "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := storetest.New(t)
			ds, _ := versions(t, s)
			activateTree(t, s, "web", ds[1])
			work := t.TempDir()
			for _, d := range []string{"u", "w", "m"} {
				os.Mkdir(filepath.Join(work, d), 0o755)
			}
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", tc.mount+" && echo mounted && exec sleep 60")
			cmd.Env = append(os.Environ(), "TREE="+s.TreePath(ds[0]), "WORK="+work)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Skipf("cannot run unshare: %v", err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "mounted\n" {
				cmd.Wait()
				t.Skipf("cannot mount in a private namespace here: %s", strings.TrimSpace(stderr.String()))
			}
			rep := collect(t, s, Options{Keep: 3})
			why := keptWhy(rep, ds[0])
			if !strings.Contains(why, fmt.Sprintf("pid %d", cmd.Process.Pid)) || !strings.Contains(why, tc.want) {
				t.Errorf("v1 kept because %q, want pid %d and %q", why, cmd.Process.Pid, tc.want)
			}
			if !exists(s.TreePath(ds[0])) {
				t.Fatal("a mounted tree was removed")
			}
		})
	}
}

// TestTreeLockFiles: gc removes the tree lock files of digests the index
// does not have, except one an import holds.
func TestTreeLockFiles(t *testing.T) {
	s := storetest.New(t)
	ctx := context.Background()
	held, free := digest.FromString("importing"), digest.FromString("failed import")
	l, err := s.LockTree(ctx, held)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	l2, err := s.LockTree(ctx, free)
	if err != nil {
		t.Fatal(err)
	}
	l2.Unlock()
	other := filepath.Join(s.Root(), "locks", "machine-web")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	collect(t, s, Options{DryRun: true})
	if !exists(s.TreeLockPath(free)) {
		t.Fatal("a dry run removed a lock file")
	}
	collect(t, s, Options{})
	if exists(s.TreeLockPath(free)) {
		t.Error("the lock file of a failed import survived")
	}
	if !exists(s.TreeLockPath(held)) || !exists(other) {
		t.Error("gc removed a held tree lock or a machine lock")
	}
}

// TestMachineLinkUnderAnOldName: a machine directory whose name today's
// rules refuse (web_1 was accepted before names followed nspawn's rules)
// and that the index does not know is still a root: its link is what a
// running service may use.
func TestMachineLinkUnderAnOldName(t *testing.T) {
	s := storetest.New(t)
	ds, _ := versions(t, s)
	dir := filepath.Join(s.MachinesDir(), "web_1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join("..", "..", "trees", string(ds[1].Algorithm()), ds[1].Encoded())
	if err := os.Symlink(target, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	rep := collect(t, s, Options{Keep: 0})
	if !exists(s.TreePath(ds[1])) {
		t.Fatalf("gc removed the tree machines/web_1/current points at (removed %v)", treeDigests(rep))
	}
	// The link nothing recorded was the test's fixture: the check at
	// cleanup would rightly report it.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}
