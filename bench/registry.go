package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	"time"
)

// registry is a docker-registry (Debian's distribution 2.8) on 127.0.0.1
// that the benchmark starts itself: filesystem storage under its own
// directory, the access log (Combined Log Format) on its stdout, read to
// count the blob bytes each tool fetches. It mirrors
// integration/registry_test.go's startRegistry without importing test code.
type registry struct {
	addr   string // 127.0.0.1:PORT
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	stderr bytes.Buffer

	mu      sync.Mutex
	cond    *sync.Cond
	blobs   traffic // blob GETs logged so far
	marks   map[string]bool
	logDone bool
	markSeq int
}

// traffic is what the access log shows of blob GETs.
type traffic struct {
	Bytes int64 // response bytes
	Gets  int
}

func (t traffic) minus(o traffic) traffic { return traffic{t.Bytes - o.Bytes, t.Gets - o.Gets} }

// registryLimit bounds every wait on the registry: start-up, a marker line
// reaching the access log. All of them take milliseconds here.
const registryLimit = 60 * time.Second

// accessLine is the request, status and size of a Combined Log Format line.
var accessLine = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3}) ([0-9]+|-)`)

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)

const markParam = "rootswap-bench-mark"

// startRegistry starts docker-registry on a free port, storage in dir,
// and returns once its access log shows a request of ours.
func startRegistry(dir string) (*registry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry (Debian's package, installed by scripts/deps.sh): %w", err)
	}
	// The port is free when picked but may be taken before the registry
	// binds it; then it exits and we pick again.
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		r, err := launchRegistry(bin, dir, port)
		if err == nil {
			return r, nil
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

func launchRegistry(bin, dir string, port int) (*registry, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
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
`, filepath.Join(dir, "storage"), addr)
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	r := &registry{addr: addr, dir: dir, exited: make(chan struct{}), marks: map[string]bool{}}
	r.cond = sync.NewCond(&r.mu)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin, "serve", cfg)
	r.cmd.Stdout, r.cmd.Stderr = pw, &lockedWriter{mu: &r.mu, w: &r.stderr}
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
	if err := r.mark(context.Background()); err != nil {
		r.stop()
		r.mu.Lock()
		log := r.stderr.String()
		r.mu.Unlock()
		return nil, fmt.Errorf("docker-registry on %s: %v: %s", addr, err, lastLines(log, 5))
	}
	return r, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (r *registry) readAccessLog(pr *os.File) {
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		path, query, _ := strings.Cut(m[2], "?")
		size, _ := strconv.ParseInt(m[4], 10, 64) // "-" is 0
		r.mu.Lock()
		if m[1] == "GET" && blobPath.MatchString(path) {
			r.blobs.Bytes += size
			r.blobs.Gets++
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

// mark sends GET /v2/?MARK and waits until its line is in the access log:
// the registry logs a request as its handler returns, so every request a
// client finished before mark is counted once mark returns.
func (r *registry) mark(ctx context.Context) error {
	r.mu.Lock()
	r.markSeq++
	id := strconv.Itoa(r.markSeq)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, registryLimit)
	defer cancel()
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
		// Right after start the registry may not listen yet; the pause
		// only paces the polling, the deadline decides.
		select {
		case <-r.exited:
			return fmt.Errorf("exited before answering GET /v2/")
		case <-ctx.Done():
			return fmt.Errorf("no answer to GET /v2/ within %v: %w", registryLimit, err)
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
			return fmt.Errorf("marker request not in the access log within %v", registryLimit)
		}
		r.cond.Wait()
	}
	return nil
}

// traffic returns the blob GETs logged up to now, after a mark.
func (r *registry) traffic(ctx context.Context) (traffic, error) {
	if err := r.mark(ctx); err != nil {
		return traffic{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobs, nil
}

// stop ends the registry process this benchmark started.
func (r *registry) stop() {
	if r.cmd.Process != nil {
		r.cmd.Process.Signal(os.Interrupt)
		select {
		case <-r.exited:
		case <-time.After(registryLimit):
			r.cmd.Process.Kill()
			<-r.exited
		}
	}
}

// manifestTypes are the manifest media types asked for: the image
// manifests docker push writes (no lists: the images are single-platform).
const manifestTypes = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

// manifest is the part of an image manifest the benchmark reads.
type manifest struct {
	MediaType string `json:"mediaType"`
	Config    blob   `json:"config"`
	Layers    []blob `json:"layers"`
	raw       []byte
}

type blob struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	Digest    string `json:"digest"`
}

func (r *registry) manifest(ctx context.Context, repo, ref string) (*manifest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestTypes)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("manifest %s:%s: %s", repo, ref, resp.Status)
	}
	m := &manifest{raw: data}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	if m.MediaType == "" {
		m.MediaType = resp.Header.Get("Content-Type")
	}
	return m, nil
}

// tag points repo:tag at the manifest m (one PUT, no blobs move): how the
// upgrade scenario moves one tag from v1 to v2 between the untimed pull
// of v1 and the timed pull of the same reference.
func (r *registry) tag(ctx context.Context, repo, tag string, m *manifest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+r.addr+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m.raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", m.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("tag %s:%s: %w", repo, tag, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("tag %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}

// blob opens repo's blob d.
func (r *registry) blob(ctx context.Context, repo, d string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v2/"+repo+"/blobs/"+d, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s: %s", d, resp.Status)
	}
	return resp.Body, nil
}

// push copies a local image of the shared daemon to repo:tag in the
// registry with docker push (gzip layers, as any Docker user's are) and
// drops the extra local tag again.
func (r *registry) push(ctx context.Context, image, repo, tag string) error {
	ref := r.addr + "/" + repo + ":" + tag
	if _, err := docker(ctx, nil, "tag", image, ref); err != nil {
		return err
	}
	defer docker(context.WithoutCancel(ctx), nil, "rmi", ref)
	_, err := docker(ctx, nil, "push", "-q", ref)
	return err
}
