package gc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
)

// TestInUseByStackMount: a process whose mount namespace holds an overlay
// of a stack's layers keeps the stack's tree from gc, however the overlay
// names its layers: mounted on the stack directory (run), or elsewhere
// (`rootswap mount`) with the layers relative to the stack directory
// (mount(2), as kernels before 6.8 need) or with lowerdir+ (the new mount
// API). Each is a real overlay in a private mount namespace.
func TestInUseByStackMount(t *testing.T) {
	if os.Getenv("GC_STACK_MOUNT") != "" {
		helperMountStack(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, overlayfs)")
	}
	// Not t.TempDir(): the test's name must not reach overlayfs options.
	base, err := os.MkdirTemp("", "gc-stack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	trees := filepath.Join(base, "trees")
	d := digest.FromString("stack")
	stack := filepath.Join(trees, "sha256", d.Encoded())
	for i := range 2 {
		layer := filepath.Join(base, "layerdirs", "sha256", fmt.Sprintf("l%d", i))
		if err := os.MkdirAll(layer, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(layer, fmt.Sprintf("f%d", i)), nil, 0o644)
		os.MkdirAll(stack, 0o755)
		if err := os.Symlink("../../../layerdirs/sha256/"+filepath.Base(layer), filepath.Join(stack, fmt.Sprintf("layer@%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	elsewhere := filepath.Join(base, "mnt")
	os.Mkdir(elsewhere, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, script, want string
	}{
		{"run", "cd $STACK && mount -t overlay -o ro,lowerdir=layer@1:layer@0 $STACK $STACK && cd /", "overlay mounted at " + stack},
		{"mount(2)", "cd $STACK && mount -t overlay -o ro,lowerdir=layer@1:layer@0 $STACK $MNT && cd /", "overlay of " + stack + " at " + elsewhere},
		{"lowerdir+", self + " -test.run=^TestInUseByStackMount$ >&2", "overlay of " + stack + " at " + elsewhere},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", tc.script+" && echo mounted && exec sleep 60")
			cmd.Env = append(os.Environ(), "STACK="+stack, "MNT="+elsewhere)
			if tc.name == "lowerdir+" {
				cmd.Env = append(cmd.Env, "GC_STACK_MOUNT=1")
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "mounted\n" {
				cmd.Wait()
				t.Fatalf("mount: %s", strings.TrimSpace(stderr.String()))
			}
			found, err := inUse("/proc", trees)
			if err != nil {
				t.Fatal(err)
			}
			why := found[d]
			if !strings.Contains(why, fmt.Sprintf("pid %d", cmd.Process.Pid)) || !strings.Contains(why, tc.want) {
				t.Errorf("the stack is in use because %q, want pid %d and %q", why, cmd.Process.Pid, tc.want)
			}
		})
	}
}

// helperMountStack is the lowerdir+ case's mount, in the namespace
// unshare made: fsys.MountOverlay, which takes the new mount API here.
func helperMountStack(t *testing.T) {
	stack := os.Getenv("STACK")
	err := fsys.MountOverlay(os.Getenv("MNT"), fsys.Overlay{Dir: stack, Lower: []string{"layer@1", "layer@0"}})
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := fsys.MountAt(os.Getenv("MNT"))
	if !strings.Contains(m.FSType, "overlay") {
		t.Fatalf("no overlay at %s", os.Getenv("MNT"))
	}
}
