package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/testimage"
)

// contextFile is a file of a docker build context.
type contextFile struct {
	data string
	mode os.FileMode
}

// buildImage builds (once per content) an image from dockerfile and a
// context of files (name → file), with the classic builder and no network
// (the private daemon has no bridge; the steps fetch nothing), tags it
// repo:HASH and returns that reference. HASH covers the Dockerfile, the
// files and the image ID of every image a FROM names, so a changed base
// image is built on anew.
func buildImage(t *testing.T, repo, dockerfile string, files map[string]contextFile) string {
	t.Helper()
	h := sha256.New()
	h.Write([]byte(dockerfile))
	for _, line := range strings.Split(dockerfile, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") && f[1] != "scratch" {
			fmt.Fprintf(h, "\n%s %s", f[1], testimage.ImageID(t, f[1]))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "\n%s %o %d\n%s", n, files[n].mode, len(files[n].data), files[n].data)
	}
	ref := repo + ":" + hex.EncodeToString(h.Sum(nil))[:12]
	if exec.Command("docker", "image", "inspect", ref).Run() == nil {
		return ref
	}
	dir := t.TempDir()
	files = maps.Clone(files)
	if files == nil {
		files = map[string]contextFile{}
	}
	files["Dockerfile"] = contextFile{dockerfile, 0o644}
	for n, f := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("docker", "build", "--network", "none", "--force-rm", "-t", ref, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", ref, err, out)
	}
	return ref
}

// goBinary builds the Go program src (a main.go of its own module, name)
// as a static binary, and returns the binary.
func goBinary(t *testing.T, name, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+name+"\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-trimpath", "-o", name, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
