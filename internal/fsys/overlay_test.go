package fsys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inMountNS runs f on a thread of its own in a private mount namespace,
// so nothing f mounts reaches the host; the thread dies with f.
func inMountNS(t testing.TB, f func() error) error {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, overlayfs)")
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// makeStack makes n layer directories under base/layers and a stack
// directory base/stack of "layer@i" symlinks to them (0 the lowest), and
// returns the stack's lower names, topmost first.
func makeStack(t testing.TB, base string, n int) []string {
	t.Helper()
	stack := filepath.Join(base, "stack")
	if err := os.MkdirAll(stack, 0o755); err != nil {
		t.Fatal(err)
	}
	var lower []string
	for i := range n {
		dir := filepath.Join(base, "layers", fmt.Sprintf("l%03d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("layer@%d", i)
		if err := os.Symlink(filepath.Join("..", "layers", fmt.Sprintf("l%03d", i)), filepath.Join(stack, name)); err != nil {
			t.Fatal(err)
		}
		lower = append([]string{name}, lower...)
	}
	return lower
}

// hasLowerdirPlus reports whether the kernel takes overlayfs's lowerdir+.
func hasLowerdirPlus(t *testing.T) bool {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.FsconfigSetString(fd, "lowerdir+", t.TempDir()) == nil
}

func dirNames(t *testing.T, dir string) []string {
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

// TestMountOverlay mounts a two-layer stack whose upper layer whites out a
// file (a 0:0 character device) and makes a directory opaque
// (trusted.overlay.opaque=y), read-only and writable, through the new
// mount API and through mount(2) as kernels before 6.8 need, and a
// one-layer stack read-only.
func TestMountOverlay(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			if !legacy && !hasLowerdirPlus(t) {
				t.Skip("this kernel has no lowerdir+ (before 6.8)")
			}
			base := t.TempDir()
			lower := makeStack(t, base, 2)
			l0, l1 := filepath.Join(base, "layers", "l000"), filepath.Join(base, "layers", "l001")
			for _, d := range []string{"d", "o"} {
				os.MkdirAll(filepath.Join(l0, d), 0o755)
				os.MkdirAll(filepath.Join(l1, d), 0o755)
			}
			for _, f := range []string{"gone", "d/x", "o/hidden"} {
				os.WriteFile(filepath.Join(l0, f), []byte("lower"), 0o644)
			}
			os.WriteFile(filepath.Join(l1, "o", "seen"), []byte("upper"), 0o644)
			if err := unix.Mknod(filepath.Join(l1, "gone"), unix.S_IFCHR, 0); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(filepath.Join(l1, "o"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				t.Fatal(err)
			}
			legacyOverlay = legacy
			defer func() { legacyOverlay = false }()
			ro, rw := filepath.Join(base, "ro"), filepath.Join(base, "rw")
			up, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
			for _, d := range []string{ro, rw, up, work} {
				os.Mkdir(d, 0o755)
			}
			cwd, _ := os.Getwd()
			err := inMountNS(t, func() error {
				if err := MountOverlay(ro, Overlay{Dir: filepath.Join(base, "stack"), Lower: lower}); err != nil {
					return err
				}
				if err := MountOverlay(rw, Overlay{Dir: filepath.Join(base, "stack"), Lower: lower, Upper: up, Work: work}); err != nil {
					return err
				}
				if got, _ := os.Getwd(); got != cwd {
					t.Errorf("working directory after the mount: %s, want %s", got, cwd)
				}
				info, err := os.ReadFile("/proc/thread-self/mountinfo")
				if err != nil {
					return err
				}
				for _, line := range strings.Split(string(info), "\n") {
					f := strings.Fields(line)
					if len(f) > 9 && (f[4] == ro || f[4] == rw) && f[len(f)-2] != filepath.Join(base, "stack") {
						t.Errorf("mountinfo names the source of %s %q, want the stack directory:\n%s", f[4], f[len(f)-2], line)
					}
				}
				for _, m := range []string{ro, rw} {
					if got, want := dirNames(t, m), []string{"d", "f000", "f001", "o"}; !slices.Equal(got, want) {
						t.Errorf("%s holds %q, want %q (the whiteout hides gone)", m, got, want)
					}
					if got, want := dirNames(t, filepath.Join(m, "o")), []string{"seen"}; !slices.Equal(got, want) {
						t.Errorf("%s/o holds %q, want %q (opaque)", m, got, want)
					}
				}
				if err := os.WriteFile(filepath.Join(ro, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
					t.Errorf("write to the read-only overlay: %v, want EROFS", err)
				}
				if err := os.WriteFile(filepath.Join(rw, "d", "x"), []byte("changed"), 0o644); err != nil {
					t.Errorf("write to the writable overlay: %v", err)
				}
				one, empty := filepath.Join(base, "one"), filepath.Join(base, "empty")
				os.Mkdir(one, 0o755)
				os.Mkdir(empty, 0o755)
				err = MountOverlay(one, Overlay{Dir: filepath.Join(base, "stack"), Lower: lower[1:]})
				if err == nil || !strings.Contains(err.Error(), "empty directory") {
					t.Errorf("one read-only layer without Empty: %v, want a refusal", err)
				}
				if err := MountOverlay(one, Overlay{Dir: filepath.Join(base, "stack"), Lower: lower[1:], Empty: empty}); err != nil {
					return err
				}
				if got, want := dirNames(t, one), []string{"d", "f000", "gone", "o"}; !slices.Equal(got, want) {
					t.Errorf("one layer holds %q, want %q", got, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(l0, "d", "x")); string(b) != "lower" {
				t.Errorf("a write through the overlay reached the lower layer: %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(up, "d", "x")); string(b) != "changed" {
				t.Errorf("the upper directory holds %q, want the write", b)
			}
		})
	}
}

// TestMountOverlayLimits: more layers than overlayfs stacks, and on the
// mount(2) path more than its page of options holds, are refused before
// anything is mounted, with ErrTooManyLayers.
func TestMountOverlayLimits(t *testing.T) {
	many := make([]string, MaxLowers+1)
	for i := range many {
		many[i] = fmt.Sprintf("layer@%d", i)
	}
	err := MountOverlay(t.TempDir(), Overlay{Dir: t.TempDir(), Lower: many})
	if !errors.Is(err, ErrTooManyLayers) || !strings.Contains(err.Error(), "at most 500") {
		t.Errorf("%d layers: %v, want ErrTooManyLayers naming the limit", len(many), err)
	}
	legacyOverlay = true
	defer func() { legacyOverlay = false }()
	long := make([]string, 100)
	for i := range long {
		long[i] = strings.Repeat("l", 60) + fmt.Sprint(i)
	}
	err = MountOverlay(t.TempDir(), Overlay{Dir: t.TempDir(), Lower: long})
	if !errors.Is(err, ErrTooManyLayers) || !strings.Contains(err.Error(), "mount(2)") {
		t.Errorf("100 long names on the mount(2) path: %v, want ErrTooManyLayers", err)
	}
}

// BenchmarkMountOverlay mounts and unmounts a read-only stack of 1, 50
// and 100 layers through each API: what a container's start pays for its
// root (issue 19: at most 2 ms at 50 layers). µs/mount is the median
// mount alone; ns/op includes the unmount, which a run never pays (its
// namespace goes with it).
func BenchmarkMountOverlay(b *testing.B) {
	for _, n := range []int{1, 50, 100} {
		for _, legacy := range []bool{false, true} {
			b.Run(fmt.Sprintf("layers=%d/legacy=%v", n, legacy), func(b *testing.B) {
				base := b.TempDir()
				lower := makeStack(b, base, n)
				target, empty := filepath.Join(base, "mnt"), filepath.Join(base, "empty")
				os.Mkdir(target, 0o755)
				os.Mkdir(empty, 0o755)
				legacyOverlay = legacy
				defer func() { legacyOverlay = false }()
				err := inMountNS(b, func() error {
					var mounted []time.Duration
					for b.Loop() {
						start := time.Now()
						if err := MountOverlay(target, Overlay{Dir: filepath.Join(base, "stack"), Lower: lower, Empty: empty}); err != nil {
							return err
						}
						mounted = append(mounted, time.Since(start))
						if err := unix.Unmount(target, 0); err != nil {
							return err
						}
					}
					b.ReportMetric(median(mounted), "µs/mount")
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// median is the median of ds in µs: on a shared machine the mean follows
// whoever else runs.
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Nanoseconds()) / 1e3
}

// BenchmarkOverlayDepth weighs the two ways a container's writable root
// can stand on a stack of 50 layers (20 files each): nspawn's
// --volatile=overlay (a tmpfs upper) over run's read-only overlay of the
// layers, stacking depth 2 (depth=2), against one writable overlay of the
// layers with the tmpfs upper (depth=1). Each iteration mounts afresh and
// walks the whole root (readdir and lstat of every entry), as a start
// meets it with the layers' own dentries cached; it reports the medians
// of the mounts and of the walk.
func BenchmarkOverlayDepth(b *testing.B) {
	for _, depth := range []int{1, 2} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			base := b.TempDir()
			lower := makeStack(b, base, 50)
			for i := range 50 {
				dir := filepath.Join(base, "layers", fmt.Sprintf("l%03d", i), "usr")
				os.MkdirAll(dir, 0o755)
				for j := range 20 {
					os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d-%02d", i, j)), []byte("x"), 0o644)
				}
			}
			ro, root, tmp := filepath.Join(base, "ro"), filepath.Join(base, "root"), filepath.Join(base, "tmp")
			for _, d := range []string{ro, root, tmp} {
				os.Mkdir(d, 0o755)
			}
			stack := filepath.Join(base, "stack")
			err := inMountNS(b, func() error {
				var mounts, walks []time.Duration
				for b.Loop() {
					start := time.Now()
					if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, ""); err != nil {
						return err
					}
					up, work := filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
					os.Mkdir(up, 0o755)
					os.Mkdir(work, 0o755)
					o := Overlay{Dir: stack, Lower: lower, Upper: up, Work: work}
					if depth == 2 {
						if err := MountOverlay(ro, Overlay{Dir: stack, Lower: lower}); err != nil {
							return err
						}
						o = Overlay{Dir: base, Lower: []string{ro}, Upper: up, Work: work}
					}
					if err := MountOverlay(root, o); err != nil {
						return err
					}
					mounted := time.Now()
					n := 0
					err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
						if err == nil {
							_, err = os.Lstat(p)
							n++
						}
						return err
					})
					if err != nil || n < 1000 {
						return fmt.Errorf("walk: %d entries, %v", n, err)
					}
					mounts, walks = append(mounts, mounted.Sub(start)), append(walks, time.Since(mounted))
					for _, m := range []string{root, ro, tmp} {
						if m == ro && depth == 1 {
							continue
						}
						if err := unix.Unmount(m, 0); err != nil {
							return err
						}
					}
				}
				b.ReportMetric(median(mounts), "µs/mount")
				b.ReportMetric(median(walks), "µs/walk")
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
