package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// silent is a TCP listener that accepts connections and never says a
// word: a registry (or a TLS endpoint) that hangs. It counts what it
// accepted.
type silent struct {
	l     net.Listener
	mu    sync.Mutex
	conns int
}

func newSilent(t *testing.T) *silent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silent{l: l}
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			held = append(held, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return s
}

func (s *silent) host() string { return s.l.Addr().String() }

// A mirror that never answers — a TCP peer that says nothing, or a TLS
// endpoint that never finishes its handshake — costs one timeout and one
// warning per command: it is skipped for the rest of it.
func TestMirrorHung(t *testing.T) {
	up := newServer(t)
	ls := threeLayers(t)
	img := testImage(t, nil, asLayers(ls)...)
	up.push(t, "app:v1", img)
	ref := "docker://" + up.host + "/app:v1"
	hung := newSilent(t)
	for _, c := range []struct {
		name   string
		mirror string // its location
		dial   bool   // a transport that sends the mirror's address to the silent listener
	}{
		// Loopback is plain HTTP: a request nobody answers.
		{"silent TCP", hung.host(), false},
		// A public address is HTTPS: a handshake nobody answers.
		{"TLS handshake hangs", "192.0.2.1:443", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := writeConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\n[[registry.mirror]]\nlocation = %q\n", up.host, c.mirror))
			var logs bytes.Buffer
			opt := Options{MirrorsFile: conf, Timeout: testTimeout, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			if c.dial {
				var d net.Dialer
				opt.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if strings.HasPrefix(addr, "192.0.2.1:") {
						addr = hung.host()
					}
					return d.DialContext(ctx, network, addr)
				}}
			}
			src := newSource(opt)
			up.take()
			err, took := within(t, testLimit, "a pull through a hung mirror", func() error {
				im, err := src.Resolve(t.Context(), parseRef(t, ref))
				if err != nil {
					return err
				}
				checkLayers(t, im, ls...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := up.take(); len(got) != 5 {
				t.Errorf("upstream was asked %v, want the manifest, the config and three blobs", got)
			}
			if n := strings.Count(logs.String(), "registry mirror failed"); n != 1 {
				t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
			}
			t.Logf("pull through a hung mirror took %s (timeout %s)", took, testTimeout)
		})
	}
}

// A hung registry is asked once per command: a Pull that found it
// unreachable is not followed by a Resolve that waits for it again.
func TestAskedOnce(t *testing.T) {
	s := newServer(t)
	stop := hold(t)
	s.gate = func(w http.ResponseWriter, r *http.Request) bool { <-stop; return true }
	ref := "docker://" + s.host + "/app:v1"
	src := newSource(Options{Timeout: testTimeout, Refs: &mapCache{}})
	err, took := within(t, testLimit, "Pull and Resolve of a hung registry", func() error {
		if _, err := src.Pull(t.Context(), parseRef(t, ref)); !errors.Is(err, snapshot.ErrUnreachable) {
			return fmt.Errorf("Pull: %w, want ErrUnreachable", err)
		}
		_, err := src.Resolve(t.Context(), parseRef(t, ref))
		return err
	})
	if !errors.Is(err, snapshot.ErrUnreachable) {
		t.Fatalf("Resolve: err = %v, want ErrUnreachable", err)
	}
	if got := s.allReqs(); len(got) != 1 {
		t.Errorf("the hung registry was asked %v, want one request", got)
	}
	if took > 2*testTimeout {
		t.Errorf("Pull and Resolve took %s, want about one timeout (%s)", took, testTimeout)
	}
}

// A refused tag is asked once per command too: a Pull that got a 404 is
// not followed by a Resolve that asks again.
func TestRefusalAskedOnce(t *testing.T) {
	s := newServer(t)
	s.push(t, "app:v1", testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1"))))
	ref := "docker://" + s.host + "/app:nope"
	src := newSource(Options{Timeout: testTimeout, Refs: &mapCache{}})
	if _, err := src.Pull(t.Context(), parseRef(t, ref)); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("Pull: %v, want ErrImageNotFound", err)
	}
	if _, err := src.Resolve(t.Context(), parseRef(t, ref)); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("Resolve: %v, want ErrImageNotFound", err)
	}
	if got := s.take(); len(got) != 1 {
		t.Errorf("the registry was asked %v for a tag it refused, want one request", got)
	}
	// Another command (Source) asks again.
	if _, err := newSource(Options{Timeout: testTimeout}).Resolve(t.Context(), parseRef(t, ref)); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("Resolve: %v, want ErrImageNotFound", err)
	}
	if got := s.take(); len(got) != 1 {
		t.Errorf("a new Source asked %v, want one request", got)
	}
}

// A mirror that stops sending in the middle of a blob: the blob goes on
// from the upstream, the mirror is skipped from then on with one warning.
// What the mirror sent before it stopped is checked with the rest: a lie
// spliced with the upstream's true tail is a digest mismatch.
func TestMirrorStallsMidBlob(t *testing.T) {
	for _, lie := range []bool{false, true} {
		t.Run(fmt.Sprintf("lies %t", lie), func(t *testing.T) { mirrorStallsMidBlob(t, lie) })
	}
}

func mirrorStallsMidBlob(t *testing.T, lie bool) {
	up := newServer(t)
	ls := threeLayers(t)
	big := newLayer(t, "none", tarOf(t, "big", strings.Repeat("y", 256<<10)))
	ls = append(ls, big)
	img := testImage(t, nil, asLayers(ls)...)
	up.push(t, "app:v1", img)
	mirror := newServer(t)
	mirror.push(t, "app:v1", img)
	stop := hold(t)
	bigPath := "/blobs/" + digest.FromBytes(big.blob).String()
	mirror.gate = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, bigPath) {
			return false
		}
		b := bytes.Clone(big.blob[:len(big.blob)/3])
		if lie {
			b = bytes.ReplaceAll(b, []byte("y"), []byte("z"))
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(big.blob)))
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		w.(http.Flusher).Flush()
		<-stop
		return true
	}
	conf := writeConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\n[[registry.mirror]]\nlocation = %q\n", up.host, mirror.host))
	var logs bytes.Buffer
	src := newSource(Options{MirrorsFile: conf, Timeout: testTimeout, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	im, err := src.Resolve(t.Context(), parseRef(t, "docker://"+up.host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	up.take()
	mirror.take()
	layers, err := im.Layers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The big layer first, so the others come after the mirror failed.
	order := append([]snapshot.Layer{layers[3]}, layers[:3]...)
	err, took := within(t, testLimit, "a pull whose mirror stalls mid-blob", func() error {
		for _, l := range order {
			b, err := readAll(t.Context(), l)
			if err != nil {
				return err
			}
			if digest.FromBytes(b) != l.DiffID() {
				return fmt.Errorf("layer %s: content has digest %s", l.DiffID(), digest.FromBytes(b))
			}
		}
		return nil
	})
	if lie {
		if !errors.Is(err, snapshot.ErrDigestMismatch) {
			t.Fatalf("a lying mirror's bytes spliced with the upstream's: err = %v, want a digest mismatch", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if m, u := mirror.take(), up.take(); len(m) != 1 || len(u) != 4 {
		t.Errorf("mirror was asked %v, upstream %v; want the big blob of the mirror, then all four of the upstream", m, u)
	}
	if n := strings.Count(logs.String(), "registry mirror failed"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
	t.Logf("the pull took %s (timeout %s)", took, testTimeout)
}
