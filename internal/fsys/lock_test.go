package fsys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLockFileFollowsRemoval: a process waiting for a lock file that its
// holder removes ends up holding the file the path names now, so it
// excludes everyone who locks the path later.
func TestLockFileFollowsRemoval(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l")
	l1, err := LockFile(ctx, path, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock, 1)
	go func() {
		l, err := LockFile(ctx, path, true, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	// Remove the file only once the waiter has it open, however long that
	// takes: removing it earlier would let the waiter open the new file
	// and the test would test nothing.
	waitOpen(t, path, 2)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l1.Unlock()
	l2 := <-got
	if l2 == nil {
		return
	}
	defer l2.Unlock()
	if same, err := names(path, l2.f); err != nil || !same {
		t.Fatalf("the waiter holds a file the path no longer names (err %v)", err)
	}
	if _, err := LockFile(ctx, path, true, 20*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("a later locker got %v, want ErrLocked", err)
	}
}

// waitOpen waits until this process has at least n descriptors open on
// the file path names.
func waitOpen(t *testing.T, path string, n int) {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		open := 0
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat(filepath.Join("/proc/self/fd", e.Name()), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
				open++
			}
		}
		if open >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d descriptors open after 30s, want %d", path, open, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRemoveLocked(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l")
	if ok, err := RemoveLocked(path); ok || err != nil {
		t.Fatalf("missing file: %v, %v; want false, nil", ok, err)
	}
	l, err := LockFile(ctx, path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := RemoveLocked(path); ok || err != nil {
		t.Fatalf("held file: %v, %v; want false, nil", ok, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("a held lock file was removed")
	}
	l.Unlock()
	if ok, err := RemoveLocked(path); !ok || err != nil {
		t.Fatalf("free file: %v, %v; want true, nil", ok, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a free lock file survived")
	}
}

// TestFlockTurnstile: an exclusive Flock waiting for a shared holder
// keeps later shared Flocks out (they would otherwise overlap the holder
// and each other for ever), and gets the lock once the holder is gone.
func TestFlockTurnstile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	holder, writer, reader, probe := open(), open(), open(), open()
	if err := Flock(holder, false, time.Second); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- Flock(writer, true, 30*time.Second) }()
	// Wait until the writer holds the turnstile.
	for deadline := time.Now().Add(30 * time.Second); turnstile(probe, false) == nil; time.Sleep(time.Millisecond) {
		probe.Close() // drops the probe's own turnstile lock
		if probe = open(); time.Now().After(deadline) {
			t.Fatal("the waiting writer never took the turnstile")
		}
	}
	if err := Flock(reader, false, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("a shared Flock while a writer waits: %v, want ErrLocked", err)
	}
	holder.Close()
	if err := <-got; err != nil {
		t.Fatalf("the writer, once the holder is gone: %v", err)
	}
	if err := unix.Flock(int(probe.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Fatalf("the writer's lock is not exclusive: flock LOCK_SH: %v", err)
	}
}
