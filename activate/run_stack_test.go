package activate

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// fakeNspawn is a systemd-nspawn that reports what it was given: its
// arguments, and of its --directory the entries, /etc/passwd, the mount
// there and whether it can be written, into the file it returns.
func fakeNspawn(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := `#!/bin/sh
echo "args: $*" > ` + out + `
while [ $# -gt 0 ]; do [ "$1" = --directory ] && d=$2; shift; done
{
  echo "entries: $(ls -A "$d" | tr '\n' ' ')"
  echo "passwd: $(cat "$d/etc/passwd" 2>&1 | tr '\n' ' ')"
  echo "mount: $(grep " $d " /proc/self/mountinfo | sed 's/.* - //')"
  touch "$d/new" 2>/dev/null && echo "wrote the tree"
} >> ` + out + "\nexit 0\n"
	bin := filepath.Join(dir, "nspawn")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROOTSWAP_NSPAWN", bin)
	return out
}

// runStack makes machine web's current tree the stack of layers and runs
// it under fakeNspawn with the user's arguments user; it returns run's
// error, what nspawn reported and the stack's directory.
func runStack(t *testing.T, s *cache.Store, config string, user []string, layers ...[]layerFile) (error, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, overlayfs)")
	}
	out := fakeNspawn(t)
	d := importStack(t, s, layers...)
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(config)) }); err != nil {
			t.Fatal(err)
		}
	}
	dir, lower := stackDir(t, s, d)
	done := make(chan error)
	go func() { done <- Run(s, "web", user, RunOptions{NoInit: true}, io.Discard) }() // the view locks this thread; it dies with the goroutine
	err := <-done
	b, _ := os.ReadFile(out)
	if got, want := hostEntries(t, dir), strings.Join(reverse(lower), " "); got != want {
		t.Errorf("after the run the host sees the stack directory hold %q, want %q", got, want)
	}
	return err, string(b), dir
}

func reverse(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[len(l)-1-i] = s
	}
	return out
}

func line(t *testing.T, report, key string) string {
	t.Helper()
	for _, l := range strings.Split(report, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Errorf("nspawn reported no %s:\n%s", key, report)
	return ""
}

// TestRunMountsStack: run gives nspawn the stack's own directory with the
// merged tree mounted on it, read-only (whiteouts hide, opaque
// directories hide what is below, the top layer's /etc/passwd is the one
// the payload's user is looked up in), the mount's source the stack
// directory; the host still sees the layer@N links. Through both mount
// APIs (lowerdir+, and mount(2) as kernels before 6.8 take it).
func TestRunMountsStack(t *testing.T) {
	bothMountPaths(t, func(t *testing.T) {
		s := newStore(t)
		base := []layerFile{{Name: "etc", Dir: true}, {Name: "etc/passwd", Content: "root:x:0:0::/root:/bin/sh\n"},
			{Name: "usr", Dir: true}, {Name: "gone", Content: "x"}, {Name: "o", Dir: true}, {Name: "o/hidden", Content: "x"}}
		top := []layerFile{{Name: "etc", Dir: true}, {Name: "etc/passwd", Content: "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"},
			{Name: ".wh.gone"}, {Name: "o", Dir: true}, {Name: "o/.wh..wh..opq"}, {Name: "o/seen", Content: "y"}}
		config := `{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/app"],"User":"app"},"rootfs":{"type":"layers","diff_ids":[]}}`
		err, report, dir := runStack(t, s, config, nil, base, top)
		if err != nil {
			t.Fatalf("run: %v\n%s", err, report)
		}
		if got := line(t, report, "entries"); got != "etc o usr" {
			t.Errorf("nspawn's --directory holds %q, want the merged tree: etc o usr", got)
		}
		if got := line(t, report, "passwd"); !strings.Contains(got, "app:x:1000") {
			t.Errorf("nspawn's /etc/passwd is %q, want the top layer's", got)
		}
		if got := line(t, report, "args"); !strings.Contains(got, "--user=1000") && !strings.Contains(got, "--user 1000") && !strings.Contains(got, "-u 1000") {
			t.Errorf("the payload's user was not looked up in the merged /etc/passwd: %s", got)
		}
		opt := "lowerdir+=" + dir + "/layer@1,"
		if os.Getenv(fsys.LegacyOverlayEnv) == "1" {
			opt = "lowerdir=layer@1:layer@0,"
		}
		if got, want := line(t, report, "mount"), "overlay "+dir+" ro"; !strings.HasPrefix(got, want) || !strings.Contains(got, opt) {
			t.Errorf("the mount on the stack directory: %q, want %q… with %s", got, want, opt)
		}
		if strings.Contains(report, "wrote the tree") {
			t.Errorf("nspawn could write the mounted stack")
		}
	})
}

// TestRunStackOneLayer: a lone layer (what the daemon path and import
// --tar make) mounts too: overlayfs needs a second lower directory, and
// run gives it an empty one of its own.
func TestRunStackOneLayer(t *testing.T) {
	bothMountPaths(t, func(t *testing.T) {
		s := newStore(t)
		err, report, _ := runStack(t, s, "", []string{"--", "/bin/true"},
			[]layerFile{{Name: "usr", Dir: true}, {Name: "usr/bin", Dir: true}, {Name: "usr/bin/app", Content: "x"}})
		if err != nil {
			t.Fatalf("run: %v\n%s", err, report)
		}
		if got := line(t, report, "entries"); got != "usr" {
			t.Errorf("nspawn's --directory holds %q, want usr", got)
		}
	})
}

// TestRunStackScratch: a stack without /usr (FROM scratch) gets the shim's
// empty directories in the same overlay, not in a second one over it
// (nspawn's --volatile=overlay would be a third), at the same path.
func TestRunStackScratch(t *testing.T) {
	bothMountPaths(t, func(t *testing.T) {
		s := newStore(t)
		err, report, dir := runStack(t, s, "", []string{"--", "/app"},
			[]layerFile{{Name: "app", Content: "x"}}, []layerFile{{Name: "etc", Dir: true}, {Name: "etc/passwd", Content: "root:x:0:0::/:/app\n"}})
		if err != nil {
			t.Fatalf("run: %v\n%s", err, report)
		}
		if got := line(t, report, "entries"); got != "app dev etc proc run sys tmp usr" {
			t.Errorf("nspawn's --directory holds %q, want the tree and the shim", got)
		}
		if got := line(t, report, "args"); !strings.Contains(got, "--directory "+dir+" ") {
			t.Errorf("nspawn's --directory is not the stack's: %s", got)
		}
	})
}

// TestRunStackChecksMerged: the mount-point check of a read-only root
// reads the merged tree: the API mount points are in the lower layer, and
// the top one whites /tmp out.
func TestRunStackChecksMerged(t *testing.T) {
	s := newStore(t)
	var base []layerFile
	for _, p := range append([]string{"usr"}, apiMounts...) {
		base = append(base, layerFile{Name: strings.TrimPrefix(p, "/"), Dir: true})
	}
	err, report, _ := runStack(t, s, "", []string{"--read-only", "--", "/bin/true"}, base, []layerFile{{Name: ".wh.tmp"}})
	if err == nil || !strings.Contains(err.Error(), "has no /tmp to mount on") {
		t.Errorf("run --read-only of a stack whose top layer whites out /tmp: %v, want the mount-point refusal of /tmp alone\n%s", err, report)
	}
	if report != "" {
		t.Errorf("nspawn ran: %s", report)
	}
}

// TestRunStackTooManyLayers: a stack of more layers than overlayfs holds is
// one line, before anything is mounted or recorded.
func TestRunStackTooManyLayers(t *testing.T) {
	s := newStore(t)
	fakeNspawn(t)
	d := storetest.Import(t, s, "img:1", storetest.File{Name: "plain", Content: "x"})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	lower := make([]string, 501)
	for i := range lower {
		lower[i] = "layer@" + string(rune('0'+i%10))
	}
	useStack(t, d, s.TreePath(d), lower)
	err := Run(s, "web", nil, RunOptions{}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "run web: tree "+d.String()+" stacks 501 layers, more than overlayfs can (500)") || strings.Contains(err.Error(), "\n") {
		t.Errorf("run of 501 layers: %v, want one line saying so", err)
	}
	var starts int
	s.View(func(tx *index.Tx) error {
		g, err := tx.Generation("web", 1)
		starts = g.Starts
		return err
	})
	if starts != 0 {
		t.Errorf("a refused run counted a start")
	}
}

// TestRunStackPrivateUsers: --private-users would have nspawn ID-map the
// root, which overlayfs refuses ("ID mapped mounts are apparently not
// available"): refused in one line before nspawn starts, unless the user
// chose --private-users-ownership=off.
func TestRunStackPrivateUsers(t *testing.T) {
	s := newStore(t)
	layer := []layerFile{{Name: "usr", Dir: true}}
	err, report, _ := runStack(t, s, "", []string{"--private-users=pick", "--read-only", "--", "/bin/true"}, layer)
	if err == nil || !strings.Contains(err.Error(), "run web: option --private-users: the tree is stored as layers") || report != "" {
		t.Errorf("--private-users on a stack: %v, want a refusal before nspawn\n%s", err, report)
	}
	s = newStore(t)
	if err, report, _ := runStack(t, s, "", []string{"--private-users=pick", "--private-users-ownership=off", "--", "/bin/true"}, layer); err != nil {
		t.Errorf("--private-users-ownership=off on a stack: %v\n%s", err, report)
	}
}

// bothMountPaths runs f with the new mount API (where the kernel has
// lowerdir+) and with mount(2), as kernels before 6.8 need.
func bothMountPaths(t *testing.T, f func(t *testing.T)) {
	t.Run("newapi", f)
	t.Run("mount2", func(t *testing.T) {
		t.Setenv(fsys.LegacyOverlayEnv, "1")
		f(t)
	})
}

// TestRunStackDamagedIndex: on a damaged index run still starts the
// current tree (the link says what runs), and a stack still mounts: its
// directory, nothing but layer@N links into layerdirs/, says what the
// index cannot.
func TestRunStackDamagedIndex(t *testing.T) {
	s := newStore(t)
	d := importStack(t, s, []layerFile{{Name: "usr", Dir: true}}, []layerFile{{Name: "top", Content: "x"}})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	dir, lower := stackDir(t, s, d)
	// A copy of the store, whose index is damaged: the process remembers
	// a damaged index, and the store check of s must still read it.
	copied := filepath.Join(t.TempDir(), "store")
	if out, err := exec.Command("cp", "-a", s.Root(), copied).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(copied, "index.db"), []byte("not an index"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged, err := cache.Open(context.Background(), copied, cache.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	dir, _ = filepath.Rel(s.Root(), dir)
	dir = filepath.Join(copied, dir)
	fakeNspawn(t)
	p, err := resolveRun(damaged, "web", []string{"--", "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	if p.stack == nil || p.stack.dir != dir || strings.Join(p.stack.lower, " ") != strings.Join(lower, " ") {
		t.Errorf("on a damaged index run plans %+v, want the stack %s %q", p.stack, dir, lower)
	}
}

// TestRunStackLayerMissing: a stack whose layer directory is gone (verify
// --repair removes a damaged one) is one line saying so and what brings
// it back, not overlayfs's ENOENT.
func TestRunStackLayerMissing(t *testing.T) {
	s := newStore(t)
	fakeNspawn(t)
	d := importStack(t, s, []layerFile{{Name: "usr", Dir: true}}, []layerFile{{Name: "top", Content: "x"}})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	dir, _ := stackDir(t, s, d)
	layer, err := filepath.EvalSymlinks(filepath.Join(dir, "layer@1"))
	if err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(s.Root(), "aside")
	if err := os.Rename(layer, aside); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Rename(aside, layer) }) // for the store check
	done := make(chan error)
	go func() { done <- Run(s, "web", []string{"--", "/bin/true"}, RunOptions{NoInit: true}, io.Discard) }()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "run web: stack "+d.String()+": the layer directory of layer@1 is missing") || strings.Contains(err.Error(), "\n") {
		t.Errorf("run of a stack without its top layer: %v", err)
	}
}
