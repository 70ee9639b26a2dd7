package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// recipeVersion is part of every image tag: bump it when a recipe changes
// so that cached images built by the old recipe are not reused.
const recipeVersion = "rootswap-bench-1"

// benchRepo is the repository of every image the benchmark builds.
const benchRepo = "rootswap-bench"

// mtime is the modification time of every generated file, so generated
// images are the same byte for byte on every run.
var mtime = time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)

// imageSet is one image size: a v1 and a v2 built FROM it with an
// application layer.
type imageSet struct {
	Name string `json:"name"` // quick, debian, big
	V1   string `json:"v1"`   // tags
	V2   string `json:"v2"`
	V1ID string `json:"v1_id"`
	V2ID string `json:"v2_id"`
	// V2FileBytes is the content size of the files v2 adds or changes:
	// what an ideal store has to grow by for v2.
	V2FileBytes int64 `json:"v2_file_bytes"`
	V2Files     int   `json:"v2_files"`
	// Filled in from the first import: v1's regular files and content bytes.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// DockerSize is v1's size as Docker reports it, known before any import.
	DockerSize int64 `json:"docker_size"`
}

// size is the disk space n copies of v1 take, with room for directories
// and manifests.
func (s *imageSet) size(n int) int64 {
	b := max(s.Bytes, s.DockerSize)
	return int64(n) * (b + b/4 + 64<<20)
}

// genFile is one generated regular file.
type genFile struct {
	name string
	size int64
	seed uint64
	data []byte // fixed content instead of seeded random bytes
}

// fileSet describes n files of log-uniform sizes between lo and hi bytes,
// named dir/dNNN/fNNNNN in directories of perDir files, plus extra large
// files. Content is seeded pseudo-random data: incompressible and
// different in every file, so neither side gains from duplicates.
type fileSet struct {
	dir       string
	n, perDir int
	lo, hi    int64
	seed      uint64
	large     int   // number of extra large files
	largeSize int64 // size of each
}

func (fs fileSet) files() []genFile {
	var out []genFile
	ratio := math.Log(float64(fs.hi) / float64(fs.lo))
	for i := 0; i < fs.n; i++ {
		u := float64(mix(fs.seed<<32|uint64(i))>>11) / (1 << 53)
		size := int64(float64(fs.lo) * math.Exp(u*ratio))
		name := fmt.Sprintf("%s/d%03d/f%05d", fs.dir, i/fs.perDir, i)
		out = append(out, genFile{name: name, size: size, seed: fs.seed<<32 | uint64(i) | 1<<63})
	}
	for i := 0; i < fs.large; i++ {
		name := fmt.Sprintf("%s/large/l%02d.bin", fs.dir, i)
		out = append(out, genFile{name: name, size: fs.largeSize, seed: fs.seed<<32 | 1<<31 | uint64(i) | 1<<63})
	}
	return out
}

func totalSize(files []genFile) int64 {
	var n int64
	for _, f := range files {
		n += f.size
	}
	return n
}

// mix is splitmix64's output function.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// randomReader yields n bytes of splitmix64 output for seed.
type randomReader struct {
	x   uint64
	n   int64
	buf [8]byte
	off int
}

func newRandom(seed uint64, n int64) *randomReader {
	return &randomReader{x: seed, n: n, off: 8}
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	i := 0
	for i < len(p) {
		if r.off == 8 {
			r.x += 0x9e3779b97f4a7c15
			z := r.x
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
			z = (z ^ (z >> 27)) * 0x94d049bb133111eb
			binary.LittleEndian.PutUint64(r.buf[:], z^(z>>31))
			r.off = 0
		}
		c := copy(p[i:], r.buf[r.off:])
		r.off += c
		i += c
	}
	r.n -= int64(i)
	return i, nil
}

// tarWriter writes a deterministic archive: fixed mtimes, root-owned
// unless told otherwise, parents before children.
type tarWriter struct {
	tw   *tar.Writer
	dirs map[string]bool
}

func newTarWriter(w io.Writer) *tarWriter {
	return &tarWriter{tw: tar.NewWriter(w), dirs: map[string]bool{"": true, ".": true}}
}

func (t *tarWriter) dir(name string, mode int64) error {
	if t.dirs[name] {
		return nil
	}
	if err := t.dir(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	t.dirs[name] = true
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime, Format: tar.FormatPAX})
}

func (t *tarWriter) file(f genFile, mode int64) error {
	if err := t.dir(filepath.Dir(f.name), 0o755); err != nil {
		return err
	}
	r := io.Reader(newRandom(f.seed, f.size))
	if f.data != nil {
		r, f.size = bytes.NewReader(f.data), int64(len(f.data))
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: mode, Size: f.size, ModTime: mtime, Format: tar.FormatPAX}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := io.Copy(t.tw, r)
	return err
}

func (t *tarWriter) symlink(name, target string) error {
	if err := t.dir(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime, Format: tar.FormatPAX})
}

func (t *tarWriter) close() error { return t.tw.Close() }

// quickRootfs is the --quick v1 image: the host's static busybox and a
// few hundred generated files, a few MB in all. It has /usr, so
// systemd-nspawn accepts it as an OS tree.
func quickRootfs(w io.Writer, busybox []byte) error {
	t := newTarWriter(w)
	steps := []func() error{
		func() error { return t.dir("tmp", 0o1777) },
		func() error { return t.dir("root", 0o700) },
		func() error { return t.file(genFile{name: "bin/busybox", data: busybox}, 0o755) },
		func() error {
			for _, a := range []string{"sh", "true", "echo", "cat", "ls", "sleep"} {
				if err := t.symlink("bin/"+a, "busybox"); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			return t.file(genFile{name: "etc/passwd", data: []byte("root:x:0:0:root:/root:/bin/sh\n")}, 0o644)
		},
		func() error { return t.file(genFile{name: "etc/group", data: []byte("root:x:0:\n")}, 0o644) },
		func() error {
			return t.file(genFile{name: "usr/lib/os-release", data: []byte("ID=rootswap-bench\nNAME=\"rootswap bench (quick)\"\n")}, 0o644)
		},
		func() error { return t.symlink("etc/os-release", "../usr/lib/os-release") },
		func() error {
			for _, c := range quickChanged {
				if err := t.file(genFile{name: c, data: []byte("v1 " + c + "\n")}, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			for _, f := range quickData.files() {
				if err := t.file(f, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
		t.close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

var (
	quickData    = fileSet{dir: "usr/share/bench", n: 300, perDir: 50, lo: 64, hi: 32 << 10, seed: 1}
	quickChanged = []string{"etc/app.conf", "etc/motd"}
	quickApp     = fileSet{dir: "app", n: 30, perDir: 30, lo: 512, hi: 64 << 10, seed: 2}

	// The ~20 MB application layer of debian-v2 and big-v2.
	appData = fileSet{dir: "app", n: 300, perDir: 100, lo: 512, hi: 256 << 10, seed: 3, large: 2, largeSize: 4 << 20}
	// Regular files of Debian's base-files that v2 replaces.
	debianChanged = []string{"etc/debian_version", "etc/issue", "etc/issue.net", "etc/motd", "etc/bash.bashrc"}

	// What big adds to debian-v1: ~43k files, ~0.8 GB.
	bigData = fileSet{dir: "data", n: 43000, perDir: 100, lo: 16, hi: 128 << 10, seed: 4, large: 10, largeSize: 16 << 20}
)

// v2Context writes a docker build context that turns v1 into v2: the
// application files under /opt/app and new content for the changed files.
// It returns the content bytes and number of the files it adds or changes.
func v2Context(w io.Writer, v1 string, app fileSet, changed []string) (int64, int, error) {
	t := newTarWriter(w)
	dockerfile := fmt.Sprintf("FROM %s\nCOPY app /opt/app\nCOPY changed/ /\n", v1)
	if err := t.file(genFile{name: "Dockerfile", data: []byte(dockerfile)}, 0o644); err != nil {
		return 0, 0, err
	}
	files := app.files()
	for _, f := range files {
		if err := t.file(f, 0o644); err != nil {
			return 0, 0, err
		}
	}
	n := totalSize(files)
	for _, c := range changed {
		data := []byte(fmt.Sprintf("rootswap bench v2: %s\n", c))
		if err := t.file(genFile{name: "changed/" + c, data: data}, 0o644); err != nil {
			return 0, 0, err
		}
		n += int64(len(data))
	}
	return n, len(files) + len(changed), t.close()
}

// bigContext writes the docker build context of big: debian-v1 plus
// bigData under /srv.
func bigContext(w io.Writer, base string) error {
	t := newTarWriter(w)
	if err := t.file(genFile{name: "Dockerfile", data: []byte(fmt.Sprintf("FROM %s\nCOPY data /srv/data\n", base))}, 0o644); err != nil {
		return err
	}
	for _, f := range bigData.files() {
		if err := t.file(f, 0o644); err != nil {
			return err
		}
	}
	return t.close()
}

// tagFor derives an image tag from everything that determines the image.
func tagFor(name string, parts ...string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", recipeVersion, name)
	for _, p := range parts {
		fmt.Fprintf(h, "%s\n", p)
	}
	return benchRepo + ":" + name + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// docker runs the docker CLI with stdin and returns its stdout; the error
// carries docker's stderr.
func docker(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	// The classic builder: what Docker 20.10 does without buildx, and it
	// takes a context tar on stdin.
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func imageID(ctx context.Context, ref string) (string, bool) {
	out, err := docker(ctx, nil, "image", "inspect", "-f", "{{.Id}}", ref)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(out), true
}

// ensure returns ref's image ID, running build first if the daemon does
// not have ref. gen, if not nil, streams build's stdin.
func ensure(ctx context.Context, ref string, gen func(io.Writer) error, args ...string) (string, error) {
	if id, ok := imageID(ctx, ref); ok {
		logf("image %s: cached (%s)", ref, short(id))
		return id, nil
	}
	logf("image %s: building", ref)
	start := time.Now()
	var stdin io.Reader
	var pr *io.PipeReader
	var genErr chan error
	if gen != nil {
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		genErr = make(chan error, 1)
		go func() {
			bw := bufio.NewWriterSize(pw, 1<<20)
			err := gen(bw)
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
			genErr <- err
		}()
		stdin = pr
	}
	_, err := docker(ctx, stdin, args...)
	if genErr != nil {
		// Unblocks the generator if docker exited before reading it all.
		pr.Close()
		if gerr := <-genErr; err == nil && gerr != nil && !errors.Is(gerr, io.ErrClosedPipe) {
			err = gerr
		}
	}
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	id, ok := imageID(ctx, ref)
	if !ok {
		return "", fmt.Errorf("image %s: missing right after it was built", ref)
	}
	logf("image %s: built in %s (%s)", ref, time.Since(start).Round(time.Second), short(id))
	return id, nil
}

func short(id string) string {
	_, hex, _ := strings.Cut(id, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// buildV2 builds set's v2 FROM its v1.
func buildV2(ctx context.Context, set *imageSet, app fileSet, changed []string) error {
	// The context is generated twice (for the tag, then for docker) rather
	// than held in memory: it is cheap, and tar output is deterministic.
	h := sha256.New()
	n, count, err := v2Context(h, set.V1ID, app, changed)
	if err != nil {
		return err
	}
	set.V2FileBytes, set.V2Files = n, count
	set.V2 = tagFor(set.Name+"-v2", hex.EncodeToString(h.Sum(nil)))
	set.V2ID, err = ensure(ctx, set.V2, func(w io.Writer) error {
		_, _, err := v2Context(w, set.V1ID, app, changed)
		return err
	}, "build", "--network", "none", "--force-rm", "-q", "-t", set.V2, "-")
	return err
}

// quickImages builds the --quick pair.
func quickImages(ctx context.Context) (*imageSet, error) {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("quick image: %w (install busybox-static)", err)
	}
	h := sha256.New()
	if err := quickRootfs(h, busybox); err != nil {
		return nil, err
	}
	set := &imageSet{Name: "quick", V1: tagFor("quick-v1", hex.EncodeToString(h.Sum(nil)))}
	set.V1ID, err = ensure(ctx, set.V1, func(w io.Writer) error { return quickRootfs(w, busybox) },
		"import", "--change", `CMD ["/bin/sh"]`, "-", set.V1)
	if err != nil {
		return nil, err
	}
	return set, buildV2(ctx, set, quickApp, quickChanged)
}

// debianImages builds debian-v1 with debootstrap (the tarball is kept in
// cacheDir, so a daemon that lost its images gets it back without a
// download) and debian-v2 FROM it.
func debianImages(ctx context.Context, cacheDir, mirror string) (*imageSet, error) {
	const suite, variant = "bookworm", "minbase"
	set := &imageSet{Name: "debian", V1: tagFor("debian-v1", suite, variant, mirror)}
	tarball := filepath.Join(cacheDir, strings.ReplaceAll(strings.TrimPrefix(set.V1, benchRepo+":"), ":", "-")+".tar")
	id, ok := imageID(ctx, set.V1)
	if !ok {
		if _, err := os.Stat(tarball); err != nil {
			if err := debootstrap(ctx, cacheDir, tarball, suite, variant, mirror); err != nil {
				return nil, err
			}
		}
		var err error
		if id, err = ensure(ctx, set.V1, nil, "import", "--change", `CMD ["/bin/bash"]`, tarball, set.V1); err != nil {
			return nil, err
		}
	} else {
		logf("image %s: cached (%s)", set.V1, short(id))
	}
	set.V1ID = id
	return set, buildV2(ctx, set, appData, debianChanged)
}

func debootstrap(ctx context.Context, cacheDir, tarball, suite, variant, mirror string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debian-v1: debootstrap not found (scripts/bench.sh installs it): %w", err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("debian-v1: %w", err)
	}
	dir, err := os.MkdirTemp(cacheDir, "debootstrap-")
	if err != nil {
		return fmt.Errorf("debian-v1: %w", err)
	}
	defer os.RemoveAll(dir)
	logf("debian-v1: debootstrap --variant=%s %s %s %s (a few minutes)", variant, suite, dir, mirror)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant="+variant, suite, filepath.Join(dir, "rootfs"), mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("debian-v1: debootstrap: %v: %s", err, lastLines(string(out), 10))
	}
	logf("debian-v1: debootstrap took %s", time.Since(start).Round(time.Second))
	tmp := tarball + ".tmp"
	cmd = exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", filepath.Join(dir, "rootfs"), "-cf", tmp, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("debian-v1: tar: %v: %s", err, lastLines(string(out), 5))
	}
	return os.Rename(tmp, tarball)
}

// bigImages builds big FROM debian-v1 and big-v2 FROM big.
func bigImages(ctx context.Context, debian *imageSet) (*imageSet, error) {
	set := &imageSet{Name: "big", V1: tagFor("big-v1", debian.V1ID, fmt.Sprintf("%+v", bigData))}
	var err error
	set.V1ID, err = ensure(ctx, set.V1, func(w io.Writer) error { return bigContext(w, debian.V1ID) },
		"build", "--network", "none", "--force-rm", "-q", "-t", set.V1, "-")
	if err != nil {
		return nil, err
	}
	return set, buildV2(ctx, set, appData, debianChanged)
}

// debianMirror is the first bookworm mirror in apt's sources.
func debianMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, p := range append([]string{"/etc/apt/sources.list"}, files...) {
		if data, err := os.ReadFile(p); err == nil {
			if m, ok := mirrorIn(p, string(data)); ok {
				return m
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// mirrorIn finds a bookworm "deb" source in one apt sources file, in the
// deb822 format (*.sources) or the one-line format.
func mirrorIn(name, data string) (string, bool) {
	if strings.HasSuffix(name, ".sources") {
		for _, stanza := range strings.Split(data, "\n\n") {
			f := map[string]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
					f[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			if hasWord(f["Types"], "deb") && hasWord(f["Suites"], "bookworm") && f["URIs"] != "" {
				return strings.Fields(f["URIs"])[0], true
			}
		}
		return "", false
	}
	for _, line := range strings.Split(data, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if len(fields) > 0 && strings.HasPrefix(fields[0], "[") {
			for len(fields) > 0 && !strings.HasSuffix(fields[0], "]") {
				fields = fields[1:]
			}
			if len(fields) > 0 {
				fields = fields[1:]
			}
		}
		if len(fields) >= 2 && fields[1] == "bookworm" {
			return fields[0], true
		}
	}
	return "", false
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
