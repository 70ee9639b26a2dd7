package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// faultProxy sits between rootswap and the Docker daemon on a socket of
// its own and breaks chosen requests.
type faultProxy struct {
	socket string
	// cutExportAfter truncates every export response after this many bytes.
	cutExportAfter int64
	// beforeCreate runs before a container create is forwarded.
	beforeCreate func()
	exports      atomic.Int32
}

func startProxy(t *testing.T, p *faultProxy) {
	t.Helper()
	upstream := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	if upstream == "" || upstream == os.Getenv("DOCKER_HOST") {
		t.Fatalf("the fault proxy needs DOCKER_HOST=unix://…, have %q", os.Getenv("DOCKER_HOST"))
	}
	p.socket = filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: "docker"}) },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", upstream)
		}},
		ModifyResponse: func(resp *http.Response) error {
			if p.cutExportAfter > 0 && strings.HasSuffix(resp.Request.URL.Path, "/export") {
				p.exports.Add(1)
				resp.Body = &cutBody{r: io.LimitReader(resp.Body, p.cutExportAfter), c: resp.Body}
				resp.ContentLength = -1
			}
			return nil
		},
		ErrorLog: nil,
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.beforeCreate != nil && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/containers/create") {
			p.beforeCreate()
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// cutBody ends the stream early with an error, as a daemon that dies
// mid-export does.
type cutBody struct {
	r io.Reader
	c io.Closer
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *cutBody) Close() error { return b.c.Close() }

// assertNothingHalfDone checks that a failed import left no tree, no
// staging, no lease and no container.
func assertNothingHalfDone(t *testing.T, s *store) {
	t.Helper()
	if imgs := s.images(); len(imgs) != 0 {
		t.Errorf("a failed import left index records: %+v", imgs)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.root, "trees", "sha256")); len(ents) != 0 {
		t.Errorf("a failed import left trees: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.root, "tmp")); len(ents) != 0 {
		t.Errorf("a failed import left staging: %v", ents)
	}
	if leaked := leakedContainers(t); len(leaked) > 0 {
		t.Errorf("a failed import left containers: %v", leaked)
	}
	// The store check at cleanup runs verify.
}

func TestDaemonDiesMidExport(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	p := &faultProxy{cutExportAfter: 1 << 20} // busybox alone is ~2 MB
	startProxy(t, p)
	s := newStore(t)
	s.env = []string{"DOCKER_HOST=unix://" + p.socket}
	r := s.fail(1, []string{"export of " + v1}, "prepare", "m", v1)
	if p.exports.Load() != 1 {
		t.Fatalf("the proxy saw %d exports, want 1 (stderr: %s)", p.exports.Load(), r.stderr)
	}
	assertNothingHalfDone(t, s)
	if _, err := os.Lstat(filepath.Join(s.root, "machines", "m", "current")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed prepare created machines/m/current: %v", err)
	}
	// The next try, with a healthy daemon, works.
	s.env = nil
	s.ok("prepare", "m", v1)
}

func TestImageDeletedBetweenResolveAndCreate(t *testing.T) {
	needIntegration(t)
	// A throwaway image, so deleting it harms nothing else.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	stamp := fmt.Sprint(time.Now().UnixNano())
	tw.WriteHeader(&tar.Header{Name: "stamp", Mode: 0o644, Size: int64(len(stamp)), ModTime: time.Unix(1700000000, 0)})
	tw.Write([]byte(stamp))
	tw.Close()
	ref := "rootswap-test/throwaway:" + stamp
	cmd := exec.Command("docker", "import", "-", ref)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
	p := &faultProxy{beforeCreate: func() {
		exec.Command("docker", "rmi", "-f", ref).Run()
	}}
	startProxy(t, p)
	s := newStore(t)
	s.env = []string{"DOCKER_HOST=unix://" + p.socket}
	s.fail(1, []string{"not found"}, "import", ref)
	assertNothingHalfDone(t, s)
}

func TestDockerUnreachableImport(t *testing.T) {
	needIntegration(t)
	s := newStore(t)
	s.env = []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}
	s.fail(1, []string{"unreachable"}, "import", "anything:latest")
	assertNothingHalfDone(t, s)
}
