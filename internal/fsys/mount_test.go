package fsys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inView runs f on a goroutine whose thread has the read-only view of
// dir; the thread dies with the goroutine.
func inView(t *testing.T, dir string, f func() error, paths ...string) error {
	t.Helper()
	done := make(chan error)
	go func() {
		if err := ReadOnlyView(dir, paths...); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// TestReadOnlyView: inside the view nothing under dir can be written,
// sub-mounts included, through a symlinked path too; outside it (the
// test's own thread, the host) everything stays writable.
func TestReadOnlyView(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "store")
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	os.Symlink(dir, filepath.Join(base, "link"))
	// A sub-mount: MS_REMOUNT of the top mount alone would leave it writable.
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)

	err := inView(t, filepath.Join(base, "link"), func() error {
		for _, p := range []string{filepath.Join(dir, "new"), filepath.Join(sub, "new")} {
			if err := os.WriteFile(p, nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("create %s in the view: %v, want EROFS", p, err)
			}
		}
		if err := os.Chmod(filepath.Join(dir, "f"), 0o777); !errors.Is(err, unix.EROFS) {
			t.Errorf("chmod in the view: %v, want EROFS", err)
		}
		if err := os.Remove(filepath.Join(dir, "f")); !errors.Is(err, unix.EROFS) {
			t.Errorf("unlink in the view: %v, want EROFS", err)
		}
		return nil
	}, filepath.Join(base, "link", "sub"))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing propagated out: this thread, and the host, still write.
	for _, p := range []string{filepath.Join(dir, "new"), filepath.Join(sub, "new")} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Errorf("outside the view: %v", err)
		}
	}
	ms, err := mountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ro {
			t.Errorf("outside the view %s is read-only", m.point)
		}
	}
}

// TestRemountEachReadOnly: the fallback for kernels without
// mount_setattr gives the same result.
func TestRemountEachReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if err := unix.Mount("tmpfs", sub, "tmpfs", unix.MS_NOSUID, ""); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	done := make(chan error)
	go func() {
		runtimeLockAndUnshare := func() error {
			lockThread()
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			return unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err := runtimeLockAndUnshare(); err != nil {
			done <- err
			return
		}
		if err := remountEachReadOnly(dir); err != nil {
			done <- err
			return
		}
		if err := checkReadOnly(dir); err != nil {
			done <- err
			return
		}
		var st unix.Statfs_t
		unix.Statfs(sub, &st)
		if st.Flags&unix.ST_NOSUID == 0 {
			t.Errorf("the remount dropped nosuid from %s", sub)
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyViewFollowsHostUnmounts: a file system the host unmounts
// while a view is alive leaves the view too. A view holding on to the
// host's mounts would keep their devices busy for as long as a container
// runs (a loop device could not be detached, a disk not be ejected).
func TestReadOnlyViewFollowsHostUnmounts(t *testing.T) {
	// A shared parent, as systemd makes every mount on a real host (the
	// build machines' / is private, where no namespace sees the host's
	// later unmounts and this could not be told apart).
	store, shared := t.TempDir(), t.TempDir()
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, ""); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(shared, unix.MNT_DETACH)
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(shared, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(other, 0)
		}
	}()
	listed := func() bool {
		b, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			t.Error(err)
		}
		return strings.Contains(string(b), " "+other+" ")
	}
	ready, unmounted := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- inView(t, store, func() error {
			defer close(ready)
			if !listed() {
				return fmt.Errorf("the view does not list %s at all", other)
			}
			ready <- struct{}{}
			<-unmounted
			if listed() {
				return fmt.Errorf("the host unmounted %s but the view still holds it", other)
			}
			return nil
		})
	}()
	if _, ok := <-ready; ok {
		if err := unix.Unmount(other, 0); err != nil {
			t.Errorf("unmount %s on the host: %v", other, err)
		}
		mounted = false
		close(unmounted)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}
