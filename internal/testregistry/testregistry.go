// Package testregistry runs a real registry for tests and benchmarks:
// Debian's docker-registry (distribution 2.8, installed by
// scripts/deps.sh) on 127.0.0.1, filesystem storage in a directory of the
// caller's, its access log (one line per request, Combined Log Format) on
// its stdout, which is read to count the requests a client made.
//
// Counts are exact at a point the caller chooses: Counts first sends a
// marker request and waits for its line, and the registry logs a request
// as its handler returns, so every request a client finished before the
// call is counted.
package testregistry

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"time"

	"github.com/opencontainers/go-digest"
)

// Limit bounds every wait on the registry process: start-up, a marker
// line reaching the access log, shutdown after SIGTERM. Generous: all of
// them take milliseconds.
const Limit = 60 * time.Second

// Options configures Start. The zero value is an open registry.
type Options struct {
	// Htpasswd, if set, is a bcrypt htpasswd file (see WriteHtpasswd):
	// the registry then asks for basic auth.
	Htpasswd string
	// LogLevel is the registry's own log level (stderr); "info" if empty.
	LogLevel string
	// PickPort, if set, replaces FreePort (for a test of a port that is
	// taken).
	PickPort func() (int, error)
}

// Registry is one docker-registry process started by Start.
type Registry struct {
	addr    string // 127.0.0.1:PORT
	storage string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd.Wait returned
	stderr  lockedBuffer  // the registry's own log

	mu      sync.Mutex
	cond    *sync.Cond
	counts  Counts
	marks   map[string]bool // markers seen in the access log
	logDone bool            // the access log reached EOF
	markSeq int

	stopOnce sync.Once
}

// Counts is what the access log shows, markers left out.
type Counts struct {
	BlobGets  map[digest.Digest]int // GET /v2/NAME/blobs/DIGEST, any status
	BlobBytes int64                 // their response bytes
	Manifests map[string]int        // /v2/NAME/manifests/REF by method, any status
	Requests  int                   // every request
}

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

var (
	// accessLine is the request, status and size of a Combined Log
	// Format line: `127.0.0.1 - - [date] "GET /v2/… HTTP/1.1" 200 1234 …`.
	accessLine   = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3}) ([0-9]+|-)`)
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
)

// markParam is the query parameter of the marker requests.
const markParam = "rootswap-mark"

// Start starts docker-registry on a free port of 127.0.0.1, its storage
// and configuration in dir, and returns once it answers GET /v2/ and that
// request shows in its access log (so the answer came from this process,
// not from another one that took the port). The caller must Stop it.
func Start(ctx context.Context, dir string, opt Options) (*Registry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry (Debian's package, distribution 2.8) is missing; run scripts/deps.sh: %w", err)
	}
	pick := FreePort
	if opt.PickPort != nil {
		pick = opt.PickPort
	}
	// The port is free when picked but another process may take it before
	// the registry binds it; then the registry exits and we pick again.
	const attempts = 5
	for i := 1; ; i++ {
		port, err := pick()
		if err != nil {
			return nil, err
		}
		r, err := launch(ctx, bin, dir, port, opt)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || i == attempts {
			return r, err
		}
	}
}

// FreePort returns a port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WriteHtpasswd writes dir/htpasswd, a bcrypt entry (the only hash
// distribution accepts) made by htpasswd from apache2-utils, the password
// given on stdin, and returns its path.
func WriteHtpasswd(dir, user, password string) (string, error) {
	if _, err := exec.LookPath("htpasswd"); err != nil {
		return "", fmt.Errorf("htpasswd (apache2-utils) is missing; run scripts/deps.sh: %w", err)
	}
	cmd := exec.Command("htpasswd", "-B", "-i", "-n", user)
	cmd.Stdin = strings.NewReader(password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("htpasswd: %w: %s", err, stderr.String())
	}
	p := filepath.Join(dir, "htpasswd")
	return p, os.WriteFile(p, out, 0o600)
}

// launch starts one registry process on port. An error wrapping
// EADDRINUSE means the port was taken.
func launch(ctx context.Context, bin, dir string, port int, opt Options) (*Registry, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	storage := filepath.Join(dir, "storage")
	var auth string
	if opt.Htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: rootswap-test\n    path: %s\n", opt.Htpasswd)
	}
	level := opt.LogLevel
	if level == "" {
		level = "info"
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: %s
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
%s`, level, storage, addr, auth)
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	r := &Registry{
		addr:    addr,
		storage: storage,
		exited:  make(chan struct{}),
		counts:  Counts{BlobGets: map[digest.Digest]int{}, Manifests: map[string]int{}},
		marks:   map[string]bool{},
	}
	r.cond = sync.NewCond(&r.mu)
	// Our own pipe, not StdoutPipe: the reader may run past cmd.Wait.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin, "serve", cfg)
	r.cmd.Stdout = pw
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("docker-registry serve: %w", err)
	}
	pw.Close()
	go r.readAccessLog(pr)
	go func() {
		r.cmd.Wait()
		close(r.exited)
	}()
	if err := r.Mark(ctx); err != nil {
		r.Stop()
		if strings.Contains(r.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("docker-registry on %s: %w", addr, syscall.EADDRINUSE)
		}
		return nil, fmt.Errorf("docker-registry on %s: %v\nits log:\n%s", addr, err, r.stderr.String())
	}
	return r, nil
}

// readAccessLog parses the access log until the registry closes it.
func (r *Registry) readAccessLog(pr *os.File) {
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
		size, _ := strconv.ParseInt(m[4], 10, 64) // "-" is 0
		mark := strings.HasPrefix(query, markParam+"=")
		r.mu.Lock()
		if b := blobPath.FindStringSubmatch(path); b != nil && method == "GET" {
			r.counts.BlobGets[digest.Digest(b[1])]++
			r.counts.BlobBytes += size
		}
		if manifestPath.MatchString(path) {
			r.counts.Manifests[method]++
		}
		if !mark {
			r.counts.Requests++
		}
		if path == "/v2/" && mark {
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

// Mark sends GET /v2/?rootswap-mark=N and waits, up to Limit, until that
// request's line is in the access log: then every request a client had
// finished before the call is counted. Once the registry has stopped, the
// log is complete and Mark only waits for the reader to reach its end.
func (r *Registry) Mark(ctx context.Context) error {
	select {
	case <-r.exited:
		r.mu.Lock()
		defer r.mu.Unlock()
		for !r.logDone {
			r.cond.Wait()
		}
		return nil
	default:
	}
	r.mu.Lock()
	r.markSeq++
	id := strconv.Itoa(r.markSeq)
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, Limit)
	defer cancel()
	// Poll until the registry answers at all: right after start it may not
	// listen yet. The pause only paces the polling; the deadline decides.
	url := "http://" + r.addr + "/v2/?" + markParam + "=" + id
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
			return fmt.Errorf("no answer to GET /v2/ within %v: %v", Limit, err)
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
			return fmt.Errorf("marker request answered but not in the access log within %v", Limit)
		}
		r.cond.Wait()
	}
	return nil
}

// Counts returns what the access log shows after a Mark.
func (r *Registry) Counts(ctx context.Context) (Counts, error) {
	if err := r.Mark(ctx); err != nil {
		return Counts{}, fmt.Errorf("docker-registry on %s: %w", r.addr, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.counts
	c.BlobGets, c.Manifests = maps.Clone(c.BlobGets), maps.Clone(c.Manifests)
	return c, nil
}

// Addr is the registry's host:port, 127.0.0.1:PORT.
func (r *Registry) Addr() string { return r.addr }

// BlobFile is where the registry's filesystem storage keeps blob d's
// bytes (distribution 2.8's layout), for tests that damage it.
func (r *Registry) BlobFile(d digest.Digest) string {
	return filepath.Join(r.storage, "docker", "registry", "v2", "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// Log is the registry's own log (its stderr) so far.
func (r *Registry) Log() string { return r.stderr.String() }

// Stop stops the registry (SIGTERM, then SIGKILL if it is still running
// after Limit) and returns once it has exited: its port then refuses
// connections. It reports whether SIGTERM was enough. Idempotent.
func (r *Registry) Stop() bool {
	clean := true
	r.stopOnce.Do(func() {
		select {
		case <-r.exited:
			return
		default:
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(Limit):
			clean = false
			r.cmd.Process.Kill()
			<-r.exited
		}
	})
	return clean
}
