package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// A real registry for the tests: Debian's docker-registry (distribution
// 2.8, installed by scripts/deps.sh) on 127.0.0.1, filesystem storage in a
// temp dir, its access log (one line per request, Combined Log Format) on
// its stdout, which the test reads to count blob GETs.

// registryLimit bounds every wait on the registry process: start-up, a
// marker line reaching the access log, shutdown after SIGTERM. Generous:
// all of them take milliseconds here.
const registryLimit = 60 * time.Second

// registryOpts configures startRegistry. The zero value is an open
// registry; User and Password turn on htpasswd (bcrypt) auth.
type registryOpts struct {
	User, Password string

	// pickPort, if set, replaces freePort (for the helper's own test of a
	// port that is taken).
	pickPort func(t *testing.T) int
}

// registry is one docker-registry process started by startRegistry.
type registry struct {
	t      *testing.T
	opts   registryOpts
	addr   string // 127.0.0.1:PORT
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	stderr *lockedBuffer // the registry's own log

	// dockerConfig is a DOCKER_CONFIG directory holding a login to this
	// registry ("" without auth); docker commands against it use it.
	dockerConfig string

	// storage is the registry's filesystem storage root (for tests that
	// damage a blob after pushing it).
	storage string

	mu        sync.Mutex
	cond      *sync.Cond
	blobGets  map[digest.Digest]int // GET /v2/NAME/blobs/DIGEST lines, any status
	manifests map[string]int        // /v2/NAME/manifests/REF lines by method, any status
	requests  int                   // every line but the markers'
	marks     map[string]bool       // markers seen in the access log
	logDone   bool                  // the access log reached EOF
	markSeq   int

	stopOnce sync.Once
}

// lockedBuffer is a bytes.Buffer safe for the exec copier and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// accessLine matches the request part of a Combined Log Format line:
// `127.0.0.1 - - [date] "GET /v2/NAME/blobs/sha256:HEX HTTP/1.1" 200 …`.
var accessLine = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" [0-9]{3} `)

// blobPath is the path of a blob request; its digest is the last group.
var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// manifestPath is the path of a manifest request, by tag or digest.
var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)

// markParam is the query parameter of the marker requests (see mark).
const markParam = "rootswap-mark"

// startRegistry starts docker-registry on a free port of 127.0.0.1 and
// returns once it answers GET /v2/ and that request shows in its access
// log (so the answer came from this process, not from another one that
// took the port). The registry stops in t.Cleanup, or earlier by Stop.
func startRegistry(t *testing.T, opts registryOpts) *registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry (Debian's package, distribution 2.8) is missing; run scripts/deps.sh: %v", err)
	}
	dir := t.TempDir()
	var htpasswd string
	if opts.User != "" {
		htpasswd = writeHtpasswd(t, dir, opts.User, opts.Password)
	}
	// The port is free when we pick it but another process may take it
	// before the registry binds it; then the registry exits and we pick
	// again.
	const attempts = 5
	for i := 1; ; i++ {
		pick := freePort
		if opts.pickPort != nil {
			pick = opts.pickPort
		}
		port := pick(t)
		r, bindErr := launchRegistry(t, bin, dir, port, htpasswd, opts)
		if bindErr == nil {
			if opts.User != "" {
				r.login(t)
			}
			return r
		}
		if i == attempts {
			t.Fatalf("docker-registry: %d attempts, each port was taken: %v", attempts, bindErr)
		}
		t.Logf("docker-registry: port %d taken (%v); trying another", port, bindErr)
	}
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeHtpasswd writes a bcrypt htpasswd file (the only hash distribution
// accepts) with htpasswd from apache2-utils; the password goes on stdin.
func writeHtpasswd(t *testing.T, dir, user, password string) string {
	t.Helper()
	if _, err := exec.LookPath("htpasswd"); err != nil {
		t.Fatalf("htpasswd (apache2-utils) is missing; run scripts/deps.sh: %v", err)
	}
	cmd := exec.Command("htpasswd", "-B", "-i", "-n", user)
	cmd.Stdin = strings.NewReader(password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("htpasswd: %v\n%s", err, stderr.String())
	}
	p := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// launchRegistry starts one registry process on port. It returns the
// registry once it is ready, or a non-nil error if the process exited
// because the port was taken; anything else fails the test.
func launchRegistry(t *testing.T, bin, dir string, port int, htpasswd string, opts registryOpts) (*registry, error) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	storage := filepath.Join(dir, "storage")
	var auth string
	if htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: rootswap-test\n    path: %s\n", htpasswd)
	}
	// log.level info keeps the registry's own log (stderr) useful when a
	// test fails; the access log is separate and always on stdout.
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
%s`, storage, addr, auth)
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	r := &registry{
		t:         t,
		opts:      opts,
		addr:      addr,
		storage:   storage,
		exited:    make(chan struct{}),
		stderr:    &lockedBuffer{},
		blobGets:  map[digest.Digest]int{},
		manifests: map[string]int{},
		marks:     map[string]bool{},
	}
	r.cond = sync.NewCond(&r.mu)
	// Our own pipe, not StdoutPipe: the reader may run past cmd.Wait.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "serve", cfg)
	r.cmd.Stdout = pw
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("docker-registry serve: %v", err)
	}
	pw.Close()
	go r.readAccessLog(pr)
	go func() {
		r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("docker-registry on %s, its log:\n%s", r.addr, r.stderr.String())
		}
	})

	if err := r.mark(); err != nil {
		r.mu.Lock()
		closed := r.logDone
		r.mu.Unlock()
		if closed {
			// The access log closes as the process exits.
			select {
			case <-r.exited:
			case <-time.After(registryLimit):
			}
		}
		if strings.Contains(r.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("%s: address already in use", addr)
		}
		t.Fatalf("docker-registry on %s: %v\nits log:\n%s", addr, err, r.stderr.String())
	}
	return r, nil
}

// readAccessLog parses the access log until the registry closes it.
func (r *registry) readAccessLog(pr *os.File) {
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		method, uri := m[1], m[2]
		path, query, _ := strings.Cut(uri, "?")
		r.mu.Lock()
		if b := blobPath.FindStringSubmatch(path); b != nil && method == "GET" {
			r.blobGets[digest.Digest(b[1])]++
		}
		if manifestPath.MatchString(path) {
			r.manifests[method]++
		}
		if !strings.HasPrefix(query, markParam+"=") {
			r.requests++
		}
		if path == "/v2/" && strings.HasPrefix(query, markParam+"=") {
			r.marks[strings.TrimPrefix(query, markParam+"=")] = true
		}
		r.mu.Unlock()
		r.cond.Broadcast()
	}
	r.mu.Lock()
	r.logDone = true
	r.mu.Unlock()
	r.cond.Broadcast()
}

// mark sends GET /v2/?rootswap-mark=N and waits until that request's line
// is in the access log. The registry writes a request's line as its
// handler returns, so the requests whose responses a client had read
// before mark was called are logged by then, and counted.
func (r *registry) mark() error {
	r.mu.Lock()
	r.markSeq++
	id := strconv.Itoa(r.markSeq)
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), registryLimit)
	defer cancel()
	// Poll until the registry answers at all: right after start it may not
	// listen yet. The pause only paces the polling; the deadline decides.
	url := "http://" + r.addr + "/v2/?" + markParam + "=" + id
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			break
		}
		select {
		case <-r.exited:
			return fmt.Errorf("exited before answering GET /v2/: %v", r.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("no answer to GET /v2/ within %v: %v", registryLimit, err)
		case <-time.After(20 * time.Millisecond):
		}
	}

	stop := context.AfterFunc(ctx, r.cond.Broadcast)
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for !r.marks[id] {
		if r.logDone {
			return errors.New("access log closed before the marker request showed in it")
		}
		if ctx.Err() != nil {
			return fmt.Errorf("marker request answered but not in the access log within %v", registryLimit)
		}
		r.cond.Wait()
	}
	return nil
}

// Addr is the registry's host:port, 127.0.0.1:PORT.
func (r *registry) Addr() string { return r.addr }

// BlobGets returns how many GET requests for blob d the registry has
// logged, whatever their status, including every request a client had
// finished before the call.
func (r *registry) BlobGets(d digest.Digest) int {
	r.t.Helper()
	r.sync()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d]
}

// AllBlobGets returns the number of blob GETs per digest (see BlobGets).
func (r *registry) AllBlobGets() map[digest.Digest]int {
	r.t.Helper()
	r.sync()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[digest.Digest]int, len(r.blobGets))
	for d, n := range r.blobGets {
		out[d] = n
	}
	return out
}

// sync waits for the access log to catch up with finished requests; once
// the registry is stopped, the log is complete and there is nothing to do.
func (r *registry) sync() {
	r.t.Helper()
	select {
	case <-r.exited:
		r.mu.Lock()
		for !r.logDone {
			r.cond.Wait()
		}
		r.mu.Unlock()
		return
	default:
	}
	if err := r.mark(); err != nil {
		r.t.Fatalf("docker-registry on %s: %v", r.addr, err)
	}
}

// Stop stops the registry (SIGTERM, then SIGKILL if it is still running
// after registryLimit) and returns once it has exited: its port then
// refuses connections. Idempotent.
func (r *registry) Stop() {
	r.stopOnce.Do(func() {
		select {
		case <-r.exited:
			return
		default:
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(registryLimit):
			r.t.Errorf("docker-registry on %s: still running %v after SIGTERM; sending SIGKILL", r.addr, registryLimit)
			r.cmd.Process.Kill()
			<-r.exited
		}
	})
}

// DockerEnv is the environment for a docker CLI command against r: with
// auth, DOCKER_CONFIG points at a directory logged in to r.
func (r *registry) DockerEnv() []string {
	env := os.Environ()
	if r.dockerConfig != "" {
		env = append(env, "DOCKER_CONFIG="+r.dockerConfig)
	}
	return env
}

// login logs in to r with docker login in a temporary DOCKER_CONFIG, so
// the logins of parallel tests and the user's own ~/.docker stay apart.
func (r *registry) login(t *testing.T) {
	t.Helper()
	r.dockerConfig = t.TempDir()
	if out, err := r.docker(strings.NewReader(r.opts.Password),
		"login", "--username", r.opts.User, "--password-stdin", r.addr); err != nil {
		t.Fatalf("docker login %s: %v\n%s", r.addr, err, out)
	}
}

// docker runs the docker CLI with r's DockerEnv and returns its output.
func (r *registry) docker(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = r.DockerEnv()
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushImage pushes the local image localRef (REPO:TAG, from
// internal/testimage) to reg under the same REPO:TAG and returns the
// remote reference, 127.0.0.1:PORT/REPO:TAG.
func pushImage(t *testing.T, reg *registry, localRef string) string {
	t.Helper()
	return pushImageAs(t, reg, localRef, localRef)
}

// pushImageAs pushes the local image localRef to reg as NAME:TAG (nameTag)
// and returns 127.0.0.1:PORT/NAME:TAG: two images under one name, or one
// tag moved from v1 to v2. The extra local tag is removed again in
// t.Cleanup; the image and the registry's copy stay.
func pushImageAs(t *testing.T, reg *registry, localRef, nameTag string) string {
	t.Helper()
	if strings.Contains(nameTag, "@") || !strings.Contains(nameTag, ":") {
		t.Fatalf("pushImage %q: want NAME:TAG", nameTag)
	}
	remote := reg.Addr() + "/" + nameTag
	if out, err := reg.docker(nil, "tag", localRef, remote); err != nil {
		t.Fatalf("docker tag %s %s: %v\n%s", localRef, remote, err, out)
	}
	t.Cleanup(func() {
		if out, err := reg.docker(nil, "rmi", remote); err != nil {
			t.Logf("docker rmi %s: %v\n%s", remote, err, out)
		}
	})
	if out, err := reg.docker(nil, "push", remote); err != nil {
		t.Fatalf("docker push %s: %v\n%s", remote, err, out)
	}
	return remote
}

// ManifestRequests returns how many manifest requests (by tag or digest,
// any status) the registry has logged per method ("GET", "HEAD", "PUT"),
// including every request a client had finished before the call.
func (r *registry) ManifestRequests() map[string]int {
	r.t.Helper()
	r.sync()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.manifests))
	for m, n := range r.manifests {
		out[m] = n
	}
	return out
}

// blobFile is where the registry's filesystem storage keeps blob d's
// bytes (distribution 2.8's layout), for tests that damage it.
func (r *registry) blobFile(d digest.Digest) string {
	return filepath.Join(r.storage, "docker", "registry", "v2", "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// Requests returns how many requests the registry has logged, any path
// and status, except the helper's own markers.
func (r *registry) Requests() int {
	r.t.Helper()
	r.sync()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}
