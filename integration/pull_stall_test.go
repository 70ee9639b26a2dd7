package integration

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// stallingProxy is a reverse proxy on loopback in front of a registry.
// Once stall is set, it sends the headers and the first half of every
// blob but the ones spared, then nothing more until the test ends: a
// registry that stops sending in the middle of a blob.
type stallingProxy struct {
	addr    string
	stall   atomic.Bool
	spared  func(path string) bool
	stalled atomic.Int32 // blob responses cut
}

func newStallingProxy(t *testing.T, upstream string, spared func(path string) bool) *stallingProxy {
	t.Helper()
	p := &stallingProxy{spared: spared}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.stall.Load() || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || p.spared(r.URL.Path) {
			rp.ServeHTTP(w, r)
			return
		}
		resp, err := http.Get("http://" + upstream + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, max(resp.ContentLength/2, 1))
		w.(http.Flusher).Flush()
		p.stalled.Add(1)
		<-stop
	}))
	t.Cleanup(srv.Close)
	// Registered after the server: runs first, so Close does not wait
	// for the stalled handlers.
	t.Cleanup(func() { close(stop) })
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// TestPullStallsMidBlob: a cached machine whose tag moved, and a registry
// that stops sending in the middle of the new image's blobs. prepare
// --pull gives up after --registry-timeout without a byte, exits 0 with
// one warning, and the machine keeps its tree; a machine with nothing
// cached fails with one line. Before, both waited forever.
func TestPullStallsMidBlob(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	const nameTag = "rootswap-test/stall:stable"
	pushImageAs(t, reg, v1, nameTag)
	config2 := testimage.ImageID(t, v2)
	proxy := newStallingProxy(t, reg.Addr(), func(path string) bool { return strings.HasSuffix(path, "/blobs/"+config2) })
	src := "docker://" + proxy.addr + "/" + nameTag

	s := newStore(t)
	s.ok("prepare", "m", src)
	d := s.linked("m")
	pushImageAs(t, reg, v2, nameTag) // the tag moves
	proxy.stall.Store(true)
	s.env = []string{registryTimeoutEnv + "=1s"}

	const limit = 2 * time.Minute
	run := func(args ...string) result {
		t.Helper()
		done := make(chan result, 1)
		go func() { done <- s.run(args...) }()
		select {
		case r := <-done:
			t.Logf("%s returned after %v", strings.Join(args, " "), r.took)
			return r
		case <-time.After(limit):
			t.Fatalf("%s still running after %v against a registry that stalls mid-blob: the wait is unbounded", strings.Join(args, " "), limit)
			return result{}
		}
	}
	r := run("prepare", "--pull", "m", src)
	if r.code != 0 || !strings.Contains(r.stdout, "cached") || !strings.Contains(r.stdout, d) {
		t.Fatalf("prepare --pull, registry stalls mid-blob: exit %d, %q %q; want 0 from the cached tree %s", r.code, r.stdout, r.stderr, d)
	}
	oneWarning(t, "prepare --pull, registry stalls mid-blob", r.stderr, "unreachable")
	t.Logf("prepare --pull of the cached machine: %s", strings.TrimSpace(r.stderr))
	if got := s.linked("m"); got != d {
		t.Errorf("m runs %s, want its cached %s", got, d)
	}
	if proxy.stalled.Load() == 0 {
		t.Fatalf("no blob was cut: the test tested nothing")
	}

	r = run("prepare", "--pull", "fresh", src)
	t.Logf("prepare --pull of a new machine: %s", strings.TrimSpace(r.stderr))
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "unreachable") || strings.Contains(r.stderr, "truncated") {
		t.Errorf("prepare --pull of a new machine, registry stalls mid-blob: exit %d, stderr %q; want 1 and one line", r.code, r.stderr)
	}
}

// TestPrepareNeverResolved: through the binary, against the real
// registry: a cached machine whose IMAGE is changed to a registry that is
// down, or to the image's config digest (the digest rootswap prints, which
// a registry does not serve as a manifest), fails in one line instead of
// running its old tree with exit 0; its own IMAGE with the registry down
// still starts from cache.
func TestPrepareNeverResolved(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	ref := pushImageAs(t, reg, v1, "rootswap-test/never:v1")
	s := newStore(t)
	s.ok("prepare", "m", "docker://"+ref)
	d := s.linked("m")
	oneLine := func(what string, r result, want string) {
		t.Helper()
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, want) || strings.Contains(r.stdout, "cached") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and one line saying %q", what, r.code, r.stdout, r.stderr, want)
		}
		if got := s.linked("m"); got != d {
			t.Errorf("%s: m runs %s, want %s", what, got, d)
		}
	}
	byConfig := "docker://" + reg.Addr() + "/rootswap-test/never@" + d
	oneLine("config digest", s.run("prepare", "--pull", "m", byConfig), "rootswap images --digests")
	reg.Stop()
	oneLine("another image, registry down", s.run("prepare", "--pull", "m", "docker://"+reg.Addr()+"/rootswap-test/other:v1"), "never resolved")
	oneLine("config digest, registry down", s.run("prepare", "--pull", "m", byConfig), "rootswap images --digests")
	r := s.run("prepare", "--pull", "m", "docker://"+ref)
	if r.code != 0 || !strings.Contains(r.stdout, "cached") {
		t.Errorf("its own image, registry down: exit %d, %q %q; want 0 from cache", r.code, r.stdout, r.stderr)
	}
}

// TestPrepareLostArchive: a machine prepared from a docker-archive: file
// that is then deleted starts from its cached tree with one warning, as
// one whose registry lost the tag; a new machine fails in one line.
func TestPrepareLostArchive(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	saved := dockerSave(t, v1)
	src := "docker-archive:" + saved
	s := newStore(t)
	s.ok("prepare", "m", src)
	d := s.linked("m")
	if err := os.Remove(saved); err != nil {
		t.Fatal(err)
	}
	r := s.run("prepare", "m", src)
	if r.code != 0 || !strings.Contains(r.stdout, "cached, image gone") || !strings.Contains(r.stdout, d) {
		t.Errorf("prepare of a lost archive: exit %d, %q %q; want 0 from cache", r.code, r.stdout, r.stderr)
	}
	oneWarning(t, "prepare of a lost archive", r.stderr, "no longer has the image")
	r = s.run("prepare", "fresh", src)
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("prepare of a lost archive for a new machine: exit %d, %q %q; want 1 and one line", r.code, r.stdout, r.stderr)
	}
}
