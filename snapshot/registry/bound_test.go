package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// testTimeout is the timeout the tests configure, and testLimit how long
// a bounded operation may take under it: a generous multiple, yet far
// below what an unbounded wait (or the library's one-second back-offs)
// takes. The timeout is short, so that a stall costs a test little; but
// it bounds healthy exchanges too (each try of a Resolve as a whole), so
// TestMain sets it from what a healthy pull from a test registry takes on
// this machine under its load at the time (see calibrate): a starved CPU
// makes the timeout longer, not a healthy answer look like a stall.
var (
	testTimeout = minTestTimeout
	testLimit   = 10 * testTimeout
)

// minTestTimeout is testTimeout on an idle machine; calibrate sets it to
// timeoutFactor times the slowest of calibrationPulls healthy pulls when
// that is more.
const (
	minTestTimeout   = 300 * time.Millisecond
	timeoutFactor    = 8
	calibrationPulls = 5
)

func TestMain(m *testing.M) {
	slowest, err := calibrate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "calibrating the registry timeout:", err)
		os.Exit(1)
	}
	testTimeout = max(minTestTimeout, timeoutFactor*slowest)
	testLimit = 10 * testTimeout
	if testTimeout > minTestTimeout {
		fmt.Fprintf(os.Stderr, "a healthy pull took up to %s: the tests' registry timeout is %s\n", slowest.Round(time.Millisecond), testTimeout.Round(time.Millisecond))
	}
	os.Exit(m.Run())
}

// calibrate returns the slowest of calibrationPulls healthy pulls
// (Resolve and every layer read, with no timeout to speak of) of a
// three-layer image from a test registry on loopback.
func calibrate() (time.Duration, error) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64<<10, 3)
	if err != nil {
		return 0, err
	}
	tag, err := name.NewTag(host + "/calibrate:v1")
	if err != nil {
		return 0, err
	}
	if err := remote.Write(tag, img); err != nil {
		return 0, err
	}
	ref, err := ParseDocker(tag.String())
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	var slowest time.Duration
	for range calibrationPulls {
		start := time.Now()
		im, err := newSource(Options{Timeout: time.Minute}).Resolve(ctx, ref)
		if err != nil {
			return 0, err
		}
		ls, err := im.Layers(ctx)
		if err != nil {
			return 0, err
		}
		for _, l := range ls {
			if _, err := readAll(ctx, l); err != nil {
				return 0, err
			}
		}
		slowest = max(slowest, time.Since(start))
	}
	return slowest, nil
}

// within runs f and fails the test if it does not return within limit.
// It returns f's error and how long f took.
func within(t *testing.T, limit time.Duration, what string, f func() error) (error, time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s did not return within %s (timeout %s)", what, limit, testTimeout)
		return nil, 0
	}
}

// hold blocks a handler until the test ends. Registered after the server,
// its cleanup runs first, so the server's Close does not wait for it.
func hold(t *testing.T) <-chan struct{} {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	return stop
}

// allReqs returns every request the server saw since the last take,
// pings included, as "METHOD kind", and resets.
func (s *server) allReqs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reqs
	s.reqs = nil
	return r
}

// A blob whose body stops coming, mid-way or before its first byte, is an
// unreachable registry after the timeout, not a wait without end, and is
// not reported as a truncated blob.
func TestBlobStalls(t *testing.T) {
	layer := newLayer(t, "none", tarOf(t, "big", strings.Repeat("x", 256<<10)))
	img := testImage(t, nil, layer)
	blobPath := "/blobs/" + digest.FromBytes(layer.blob).String()
	for _, c := range []struct {
		name  string
		stall func(w http.ResponseWriter, stop <-chan struct{})
	}{
		{"mid-blob", func(w http.ResponseWriter, stop <-chan struct{}) {
			w.Header().Set("Content-Length", fmt.Sprint(len(layer.blob)))
			w.WriteHeader(http.StatusOK)
			w.Write(layer.blob[:len(layer.blob)/2])
			w.(http.Flusher).Flush()
			<-stop
		}},
		{"after headers", func(w http.ResponseWriter, stop <-chan struct{}) {
			w.Header().Set("Content-Length", fmt.Sprint(len(layer.blob)))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-stop
		}},
		{"before headers", func(w http.ResponseWriter, stop <-chan struct{}) {
			<-stop
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t)
			s.push(t, "app:v1", img)
			stop := hold(t)
			s.gate = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, blobPath) {
					return false
				}
				c.stall(w, stop)
				return true
			}
			src := newSource(Options{Timeout: testTimeout})
			im, err := src.Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/app:v1"))
			if err != nil {
				t.Fatal(err)
			}
			ls, err := im.Layers(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			s.allReqs()
			err, took := within(t, testLimit, "reading a stalled blob", func() error {
				_, err := readAll(t.Context(), ls[0])
				return err
			})
			if !errors.Is(err, snapshot.ErrUnreachable) || strings.Contains(err.Error(), "truncated") || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %v, want one line wrapping ErrUnreachable that does not say truncated", err)
			}
			if n := strings.Count(strings.Join(s.allReqs(), ","), "GET blob"); n != 1 {
				t.Errorf("the stalled blob was asked for %d times, want once", n)
			}
			t.Logf("a stalled blob failed after %s (timeout %s)", took, testTimeout)
		})
	}
}

// Cancelling the context (Ctrl-C) while a blob streams is the context's
// error, not a truncated blob.
func TestBlobCancelled(t *testing.T) {
	layer := newLayer(t, "none", tarOf(t, "big", strings.Repeat("x", 256<<10)))
	img := testImage(t, nil, layer)
	s := newServer(t)
	s.push(t, "app:v1", img)
	stop := hold(t)
	started := make(chan struct{})
	s.gate = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(layer.blob).String()) {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(layer.blob)))
		w.WriteHeader(http.StatusOK)
		w.Write(layer.blob[:len(layer.blob)/2])
		w.(http.Flusher).Flush()
		close(started)
		<-stop
		return true
	}
	src := newSource(Options{Timeout: time.Minute})
	im, err := src.Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := im.Layers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	err, _ = within(t, testLimit, "reading a cancelled blob", func() error {
		_, err := readAll(ctx, ls[0])
		return err
	})
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "truncated") || errors.Is(err, snapshot.ErrUnreachable) {
		t.Errorf("err = %v, want context.Canceled, not a truncated blob nor an unreachable registry", err)
	}
}

// A registry that refuses is asked once: a retry cannot change a 4xx or
// a digest mismatch. A server error may pass: it is asked again after a
// back-off that scales with the timeout, not the library's seconds.
func TestRetries(t *testing.T) {
	layer := newLayer(t, "none", tarOf(t, "a", "content"))
	img := testImage(t, nil, layer)
	blobPath := "/blobs/" + digest.FromBytes(layer.blob).String()
	for _, c := range []struct {
		name      string
		answer    func(n int, w http.ResponseWriter, r *http.Request) bool // n: requests for the manifest or blob so far
		path      string                                                   // the answer applies to GETs of paths ending so
		want      error                                                    // nil: success
		asked     int                                                      // GETs of that path
		readFails bool                                                     // reading the layer fails
	}{
		{"500 then 200", func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n > 1 {
				return false
			}
			http.Error(w, "busy", http.StatusInternalServerError)
			return true
		}, "/manifests/v1", nil, 2, false},
		{"404", func(n int, w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
			return true
		}, "/manifests/v1", snapshot.ErrImageNotFound, 1, false},
		{"429", func(n int, w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
			return true
		}, "/manifests/v1", errors.New("any"), 1, false},
		{"blob digest mismatch", func(n int, w http.ResponseWriter, r *http.Request) bool {
			b := bytes.Clone(layer.blob)
			b[len(b)-1] ^= 0xff
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.Write(b)
			return true
		}, blobPath, nil, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t)
			s.push(t, "app:v1", img)
			var mu sync.Mutex
			n := 0
			s.gate = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, c.path) {
					return false
				}
				mu.Lock()
				n++
				k := n
				mu.Unlock()
				return c.answer(k, w, r)
			}
			src := newSource(Options{Timeout: testTimeout})
			var im snapshot.Image
			err, took := within(t, testLimit, "Resolve", func() error {
				var err error
				im, err = src.Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/app:v1"))
				return err
			})
			switch {
			case c.want == nil && err != nil:
				t.Fatal(err)
			case c.want != nil && err == nil:
				t.Fatalf("Resolve succeeded, want an error")
			case c.want != nil && c.want != snapshot.ErrImageNotFound:
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err == nil {
				ls, err := im.Layers(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := readAll(t.Context(), ls[0]); (err != nil) != c.readFails {
					t.Fatalf("reading the layer: err = %v, want an error: %t", err, c.readFails)
				}
			}
			if n != c.asked {
				t.Errorf("%s was asked for %d times, want %d", c.path, n, c.asked)
			}
			if took > 3*testTimeout {
				t.Errorf("Resolve took %s: more than 3 times the timeout %s", took, testTimeout)
			}
		})
	}
}
