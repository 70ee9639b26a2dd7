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
