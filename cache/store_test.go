package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// CheckStore is storetest.Check, the one store check of every package's
// tests (it runs the real Verify). An internal test of cache cannot import
// storetest, which imports cache, so storetest_test.go (package cache_test,
// compiled into the same test binary) sets it in its init.
var CheckStore func(testing.TB, *Store)

// testStore opens a store under t.TempDir() and registers CheckStore.
func testStore(t *testing.T) *Store {
	t.Helper()
	if CheckStore == nil {
		t.Fatal("CheckStore is unset: storetest_test.go sets it")
	}
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "store"), Options{LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { CheckStore(t, s) })
	return s
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestOpenIdempotent(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(ctx, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"objects/sha256", "trees/sha256", "manifests/sha256", "machines", "tmp", "locks"} {
		if st := stat(t, filepath.Join(root, d)); st.Mode != syscall.S_IFDIR|0o700 {
			t.Errorf("%s: mode %o, want a directory with 0700", d, st.Mode)
		}
	}
	d := digest.FromString("pinned")
	if err := s.Update(func(tx *index.Tx) error { return tx.Pin(d) }); err != nil {
		t.Fatal(err)
	}
	ino := stat(t, s.indexPath()).Ino

	s, err = Open(ctx, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stat(t, s.indexPath()).Ino; got != ino {
		t.Error("a second Open replaced the index")
	}
	var pinned bool
	if err := s.View(func(tx *index.Tx) error { pinned = tx.Pinned(d); return nil }); err != nil || !pinned {
		t.Errorf("pin lost on reopen: %v %v", pinned, err)
	}
	for _, n := range names(t, root) {
		if strings.HasPrefix(n, ".index.db") {
			t.Errorf("temporary index %s left behind", n)
		}
	}
}

// TestOpenConcurrent opens one fresh store from several processes at once
// (this test binary, re-executed): each must succeed and find a complete
// index, whichever of them created it.
func TestOpenConcurrent(t *testing.T) {
	if root := os.Getenv("ROOTSWAP_TEST_OPEN"); root != "" {
		s, err := Open(context.Background(), root, Options{LockTimeout: 10 * time.Second})
		if err == nil {
			err = s.Update(func(tx *index.Tx) error { return tx.Pin(digest.FromString(os.Getenv("ROOTSWAP_TEST_OPEN_ID"))) })
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	root := filepath.Join(t.TempDir(), "store")
	var cmds []*exec.Cmd
	for i := range 4 {
		c := exec.Command(os.Args[0], "-test.run=^TestOpenConcurrent$")
		c.Env = append(os.Environ(), "ROOTSWAP_TEST_OPEN="+root, fmt.Sprint("ROOTSWAP_TEST_OPEN_ID=", i))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	}
	s := &Store{root: root, lockTimeout: time.Second}
	err := s.View(func(tx *index.Tx) error {
		if errs := tx.Check(); len(errs) > 0 {
			return errs[0]
		}
		for i := range 4 {
			if !tx.Pinned(digest.FromString(fmt.Sprint(i))) {
				t.Errorf("pin %d missing: a child wrote to an index that was then replaced", i)
			}
		}
		_, err := tx.Trees()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names(t, root) {
		if strings.HasPrefix(n, ".index.db") {
			t.Errorf("temporary index %s left behind", n)
		}
	}
}

// TestOpenAfterCrash: a crash while creating the index leaves the layout
// and perhaps a temporary index, never a half-made index.db; the next
// Open makes the index.
func TestOpenAfterCrash(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	for _, d := range []string{"objects/sha256", "trees/sha256", "manifests/sha256", "machines", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, ".index.db.1"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *index.Tx) error { return tx.Pin(digest.FromString("x")) }); err != nil {
		t.Fatal(err)
	}
}

// TestCleanTmp: staging whose lock is free is removed with its lease;
// staging whose lock is held is kept with its lease; a directory without
// a lock file is nobody's.
func TestCleanTmp(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	live, err := s.NewStaging("import")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := s.NewStaging("import")
	if err != nil {
		t.Fatal(err)
	}
	// The dead one holds a read-only directory, as an interrupted
	// extraction leaves it.
	if err := os.MkdirAll(filepath.Join(dead.Dir, "rootfs/ro/sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead.Dir, "rootfs/ro/sub/f"), []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"rootfs/ro/sub", "rootfs/ro"} {
		if err := os.Chmod(filepath.Join(dead.Dir, d), 0o500); err != nil {
			t.Fatal(err)
		}
	}
	dead.lock.Unlock() // its process died
	orphan := filepath.Join(s.TmpDir(), "import-1-orphan")
	if err := os.Mkdir(orphan, 0o700); err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *index.Tx) error {
		for _, id := range []string{live.ID, dead.ID} {
			if err := tx.PutLease(index.Lease{ID: id, Created: time.Now(), Expires: time.Now().Add(LeaseTTL)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.CleanTmp(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names(t, s.TmpDir()), " "), live.ID+" "+live.ID+".lock"; got != want {
		t.Errorf("tmp/ holds %q, want %q", got, want)
	}
	var leases []index.Lease
	if err := s.View(func(tx *index.Tx) (err error) { leases, err = tx.Leases(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].ID != live.ID {
		t.Errorf("leases %+v, want only %s", leases, live.ID)
	}

	// Open cleans too, once the live staging has died.
	live.lock.Unlock()
	if _, err := Open(ctx, s.root, Options{}); err != nil {
		t.Fatal(err)
	}
	if left := names(t, s.TmpDir()); len(left) > 0 {
		t.Errorf("Open left %q in tmp/", left)
	}
}

func TestLockContended(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	s.lockTimeout = 50 * time.Millisecond
	shared, err := s.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Unlock()
	other, err := s.Lock(ctx, false)
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	other.Unlock()
	if l, err := s.Lock(ctx, true); !errors.Is(err, ErrLocked) {
		l.Unlock()
		t.Fatalf("exclusive lock while shared is held: %v, want ErrLocked", err)
	}
}
