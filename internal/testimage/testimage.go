// Package testimage builds rootswap's test images locally, without a
// registry: a generated rootfs tarball around the host's static busybox,
// imported into Docker as v1, and a v2 built FROM it with one COPY and one
// RUN step.
//
// The rootfs (Rootfs) is deterministic byte for byte for a given
// /bin/busybox and holds the cases an importer gets wrong: a read-only
// directory with a child, a sticky /tmp, a 0700 /root, setuid and setgid
// files, a security.capability xattr (cap_net_bind_service=ep on
// usr/bin/capfile), a hard link pair (usr/bin/hl-a, usr/bin/hl-b), files
// owned by 1000:1000 and 65534:65534, an absolute symlink (etc/mtab),
// 200 identical empty files (var/lib/empties), 4 MiB of seeded
// pseudo-random data (var/lib/random), fixed mtimes (2024-01-02) and
// etc/rootswap-version = "v1\n".
//
// v2 (Images) differs from v1 by etc/rootswap-version = "v2\n", a new
// 2 MiB file var/lib/update/update.bin, /etc/passwd chmodded to 0600 and
// etc/rootswap-obsolete removed.
//
// Docker is driven through the docker CLI, so DOCKER_HOST from the
// environment selects the daemon (make test points it at the private one
// that scripts/dockerd.sh starts).
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Busybox is the static busybox copied into the rootfs.
const Busybox = "/bin/busybox"

// Image names; the tags are derived from the content, so an image that is
// already in the daemon is reused rather than built again.
const (
	BaseRepo   = "rootswap-test/base"
	UpdateRepo = "rootswap-test/update"
)

// mtime is every entry's modification time.
var mtime = time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)

// capNetBindService is a struct vfs_cap_data, revision 2 (the 20-byte
// form): magic VFS_CAP_REVISION_2|VFS_CAP_FLAGS_EFFECTIVE, then
// permitted/inheritable for capabilities 0-31 and 32-63. Bit 10 is
// CAP_NET_BIND_SERVICE. getcap shows it as cap_net_bind_service=ep.
var capNetBindService = func() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}()

// applets are linked to busybox in /bin; id links by absolute path.
var applets = []string{"sh", "date", "cat", "ls", "echo", "sleep", "true", "false", "chmod", "stat", "id"}

// Rootfs writes the test rootfs tarball to dir/rootfs.tar and returns its
// path. It fails the test if /bin/busybox is missing or not static.
func Rootfs(t testing.TB, dir string) string {
	t.Helper()
	p, err := writeRootfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func writeRootfs(dir string) (string, error) {
	bb, err := staticBusybox()
	if err != nil {
		return "", err
	}
	data, err := rootfsTar(bb)
	if err != nil {
		return "", fmt.Errorf("testimage: generating the rootfs: %w", err)
	}
	p := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("testimage: %w", err)
	}
	return p, nil
}

// staticBusybox reads /bin/busybox and checks that it has no program
// interpreter (PT_INTERP): the test images have no dynamic loader.
func staticBusybox() ([]byte, error) {
	const hint = "install busybox-static (scripts/deps.sh does)"
	data, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, fmt.Errorf("testimage: %v; %s", err, hint)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("testimage: %s is not an ELF binary (%v); %s", Busybox, err, hint)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("testimage: %s is dynamically linked, the test images need a static one; %s", Busybox, hint)
		}
	}
	return data, nil
}

// rootfsTar builds the rootfs archive in memory. Entries come in a fixed
// order, parents before children, and hl-a before its link hl-b.
func rootfsTar(busybox []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var werr error
	add := func(h *tar.Header, body []byte) {
		if werr != nil {
			return
		}
		h.ModTime = mtime
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if werr = tw.WriteHeader(h); werr == nil && len(body) > 0 {
			_, werr = tw.Write(body)
		}
	}
	dir := func(name string, mode int64, uid, gid int) {
		add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid}, nil)
	}
	file := func(name string, mode int64, uid, gid int, body string) {
		add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid}, []byte(body))
	}
	symlink := func(name, target string) {
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
	}

	dir("bin", 0o755, 0, 0)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, busybox)
	for _, a := range applets {
		target := "busybox"
		if a == "id" {
			target = Busybox
		}
		symlink("bin/"+a, target)
	}

	dir("etc", 0o755, 0, 0)
	file("etc/passwd", 0o644, 0, 0,
		"root:x:0:0:root:/root:/bin/sh\n"+
			"user:x:1000:1000:user:/home/user:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
	file("etc/group", 0o644, 0, 0, "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
	symlink("etc/mtab", "/proc/mounts")
	file("etc/rootswap-version", 0o644, 0, 0, "v1\n")
	file("etc/rootswap-obsolete", 0o644, 0, 0, "removed in v2\n")

	dir("home", 0o755, 0, 0)
	dir("home/user", 0o750, 1000, 1000)
	file("home/user/notes", 0o600, 1000, 1000, "owned by 1000:1000\n")

	dir("root", 0o700, 0, 0)
	file("root/.profile", 0o600, 0, 0, "PS1='# '\n")

	dir("tmp", 0o1777, 0, 0)

	dir("usr", 0o755, 0, 0)
	dir("usr/bin", 0o755, 0, 0)
	file("usr/bin/suid", 0o4755, 0, 0, "#!/bin/sh\necho setuid\n")
	file("usr/bin/sgid", 0o2755, 0, 1000, "#!/bin/sh\necho setgid\n")
	add(&tar.Header{
		Typeflag:   tar.TypeReg,
		Name:       "usr/bin/capfile",
		Mode:       0o755,
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capNetBindService},
		Format:     tar.FormatPAX,
	}, []byte("#!/bin/sh\necho cap_net_bind_service\n"))
	file("usr/bin/hl-a", 0o644, 0, 0, "one file, two names\n")
	// A link header carries its target's attributes, as GNU tar writes it:
	// Docker chmods and chowns the shared inode to what the link header says.
	add(&tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/hl-b", Linkname: "usr/bin/hl-a", Mode: 0o644}, nil)

	dir("var", 0o755, 0, 0)
	// Read-only with a child: an extractor must create the child before it
	// makes the directory 0555 (or do so as root, which ignores modes).
	dir("var/empty", 0o555, 0, 0)
	file("var/empty/keep", 0o444, 0, 0, "inside a read-only directory\n")
	dir("var/lib", 0o755, 0, 0)
	dir("var/lib/empties", 0o755, 0, 0)
	for i := 0; i < 200; i++ {
		file(fmt.Sprintf("var/lib/empties/e%03d", i), 0o644, 0, 0, "")
	}
	file("var/lib/nobody", 0o644, 65534, 65534, "owned by 65534:65534\n")
	dir("var/lib/random", 0o755, 0, 0)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/random/a.bin", Mode: 0o644}, pseudoRandom(1, 3<<20))
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/random/b.bin", Mode: 0o644}, pseudoRandom(2, 1<<20))

	if werr != nil {
		return nil, werr
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pseudoRandom returns n bytes of splitmix64 output for seed: the same
// bytes on every run and Go version, and incompressible.
func pseudoRandom(seed uint64, n int) []byte {
	b := make([]byte, n+7)
	x := seed
	for i := 0; i < n; i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^(z>>31))
	}
	return b[:n]
}

// v2Dockerfile turns v1 into v2; %s is v1's reference.
const v2Dockerfile = `FROM %s
COPY update.bin /var/lib/update/update.bin
RUN echo v2 > /etc/rootswap-version && chmod 0600 /etc/passwd && rm /etc/rootswap-obsolete
`

var (
	once       sync.Once
	onceV1     string
	onceV2     string
	onceErr    error
	buildLimit = 5 * time.Minute
)

// Images returns references to the v1 and v2 test images, building them
// once per test process. Images already in the daemon under their
// content-derived tags are reused. It fails the test, with docker's output,
// if the daemon is unreachable or a build fails.
func Images(t testing.TB) (v1, v2 string) {
	t.Helper()
	once.Do(func() { onceV1, onceV2, onceErr = buildImages() })
	if onceErr != nil {
		t.Fatal(onceErr)
	}
	return onceV1, onceV2
}

// ImageID returns ref's image ID (sha256:…).
func ImageID(t testing.TB, ref string) string {
	t.Helper()
	out, err := docker("image", "inspect", "-f", "{{.Id}}", ref)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func buildImages() (v1, v2 string, err error) {
	if _, err := docker("version"); err != nil {
		return "", "", fmt.Errorf("testimage: Docker daemon unreachable (DOCKER_HOST=%q; make test starts a private one): %w",
			os.Getenv("DOCKER_HOST"), err)
	}
	// go test runs packages in parallel processes: one builds while the
	// others wait, then find the tags.
	unlock, err := lock()
	if err != nil {
		return "", "", err
	}
	defer unlock()

	tmp, err := os.MkdirTemp("", "rootswap-testimage")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)

	tarball, err := writeRootfs(tmp)
	if err != nil {
		return "", "", err
	}
	sum, err := fileSHA256(tarball)
	if err != nil {
		return "", "", err
	}
	v1 = BaseRepo + ":" + sum[:12]
	v1ID, ok := inspectID(v1)
	if !ok {
		if _, err := docker("import", "--change", `CMD ["/bin/sh"]`, tarball, v1); err != nil {
			return "", "", err
		}
		if v1ID, ok = inspectID(v1); !ok {
			return "", "", fmt.Errorf("testimage: %s missing right after docker import", v1)
		}
	}

	ctx := filepath.Join(tmp, "v2")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		return "", "", err
	}
	dockerfile := fmt.Sprintf(v2Dockerfile, v1)
	update := pseudoRandom(3, 2<<20)
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", "", err
	}
	up := filepath.Join(ctx, "update.bin")
	if err := os.WriteFile(up, update, 0o644); err != nil {
		return "", "", err
	}
	if err := os.Chtimes(up, mtime, mtime); err != nil {
		return "", "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", v1ID, dockerfile)
	h.Write(update)
	v2 = UpdateRepo + ":" + hex.EncodeToString(h.Sum(nil))[:12]
	if _, ok := inspectID(v2); !ok {
		// --network none: nothing to fetch, and the private daemon has no
		// bridge. --force-rm: no leftover container if RUN fails.
		if _, err := docker("build", "--network", "none", "--force-rm", "-t", v2, ctx); err != nil {
			return "", "", err
		}
	}
	return v1, v2, nil
}

func inspectID(ref string) (string, bool) {
	out, err := docker("image", "inspect", "-f", "{{.Id}}", ref)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(out), true
}

// docker runs the docker CLI and returns its stdout; the error carries
// stdout and stderr.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	// The classic builder: what Docker 20.10 does without buildx, and the
	// same whichever docker CLI is first on PATH.
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("testimage: docker %s: %v\n%s%s",
			strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// lock takes an exclusive flock shared by all test processes on the machine.
func lock() (func(), error) {
	p := filepath.Join(os.TempDir(), "rootswap-testimage.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("testimage: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("testimage: lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

func fileSHA256(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]), nil
}
