package fsys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	time.Sleep(100 * time.Millisecond) // the waiter has the old file open
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
