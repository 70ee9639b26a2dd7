package registry

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/rootswap/rootswap/snapshot"
)

func writeConf(t *testing.T, conf string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestMirrors(t *testing.T) {
	up := newServer(t)
	ls := []*testLayer{newLayer(t, "gzip", tarOf(t, "a", "1")), newLayer(t, "zstd", tarOf(t, "b", "2"))}
	img := testImage(t, nil, asLayers(ls)...)
	up.push(t, "app:v1", img)
	mirror := newServer(t)
	mirror.push(t, "cache/app:v1", img) // a pull-through cache under a path prefix
	hung := newServer(t)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	hung.gate = func(http.ResponseWriter, *http.Request) bool { <-stop; return true }
	ref := "docker://" + up.host + "/app:v1"

	for _, c := range []struct {
		name     string
		mirrors  string // [[registry.mirror]] tables
		mirrored []string
		upstream []string
		warnings int
		gate     func(http.ResponseWriter, *http.Request) bool // the mirror's
	}{
		{
			name:     "mirror serves all",
			mirrors:  fmt.Sprintf("[[registry.mirror]]\nlocation = %q\n", mirror.host+"/cache"),
			mirrored: []string{"GET manifest", "GET blob", "GET blob", "GET blob"},
		},
		{
			name:     "digest-only mirror: tags from the upstream",
			mirrors:  fmt.Sprintf("[[registry.mirror]]\nlocation = %q\npull-from-mirror = \"digest-only\"\n", mirror.host+"/cache"),
			mirrored: []string{"GET blob", "GET blob", "GET blob"},
			upstream: []string{"GET manifest"},
		},
		{
			name:     "dead mirror, then a hung one, then the good one",
			mirrors:  fmt.Sprintf("[[registry.mirror]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\n", closedPort(t), hung.host, mirror.host+"/cache"),
			mirrored: []string{"GET manifest", "GET blob", "GET blob", "GET blob"},
			// The manifest falls through both, each failing once;
			// both are skipped for the rest of the command.
			warnings: 2,
		},
		{
			name:    "mirror without the image: the upstream",
			mirrors: fmt.Sprintf("[[registry.mirror]]\nlocation = %q\n", mirror.host+"/elsewhere"),
			gate: func(w http.ResponseWriter, r *http.Request) bool {
				// go-containerregistry's registry serves any blob in
				// any repository; a real one does not.
				if strings.Contains(r.URL.Path, "/elsewhere/") {
					http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
					return true
				}
				return false
			},
			// The mirror fails the manifest and is not asked again.
			mirrored: []string{"GET manifest"},
			upstream: []string{"GET manifest", "GET blob", "GET blob", "GET blob"},
			warnings: 1,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := writeConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\n", up.host)+c.mirrors)
			var logs bytes.Buffer
			src := newSource(Options{MirrorsFile: conf, Timeout: testTimeout, Log: slog.New(slog.NewTextHandler(&logs, nil))})
			mirror.mu.Lock()
			mirror.gate = c.gate
			mirror.mu.Unlock()
			up.take()
			mirror.take()
			im, err := src.Resolve(t.Context(), parseRef(t, ref))
			if err != nil {
				t.Fatal(err)
			}
			checkLayers(t, im, ls...)
			m, u := mirror.take(), up.take()
			if strings.Join(m, ",") != strings.Join(c.mirrored, ",") || strings.Join(u, ",") != strings.Join(c.upstream, ",") {
				t.Errorf("mirror was asked %v, upstream %v; want %v and %v", m, u, c.mirrored, c.upstream)
			}
			if n := strings.Count(logs.String(), "registry mirror failed"); n != c.warnings {
				t.Errorf("%d warnings, want %d:\n%s", n, c.warnings, logs.String())
			}
		})
	}

	t.Run("mirror and upstream down", func(t *testing.T) {
		dead := closedPort(t)
		conf := writeConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\n[[registry.mirror]]\nlocation = %q\n", dead, closedPort(t)))
		_, err := newSource(Options{MirrorsFile: conf}).Resolve(t.Context(), parseRef(t, "docker://"+dead+"/app:v1"))
		if !errors.Is(err, snapshot.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	})
}

func TestMirrorsConf(t *testing.T) {
	t.Run("bad", func(t *testing.T) {
		for _, conf := range []string{
			"[[registry]]\nprefix = \"a.example\"\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirror = \"sometimes\"\n",
			"[[registry]]\ninsecure = true\n",
			"[[registry]]\nprefix = \"*.example\"\n",
			"[[registry\n",
		} {
			f := writeConf(t, conf)
			if _, err := New(Options{MirrorsFile: f}).Resolve(t.Context(), parseRef(t, "docker://a.example/app:v1")); err == nil || !strings.Contains(err.Error(), f) {
				t.Errorf("conf %q: err = %v, want one naming the file", conf, err)
			}
		}
	})
	t.Run("match", func(t *testing.T) {
		m, err := loadMirrors(writeConf(t, `
[[registry]]
prefix = "docker.io"
[[registry.mirror]]
location = "hub-cache.local:5000"

[[registry]]
prefix = "docker.io/special"
location = "special.local/x"
insecure = true

[[registry]]
location = "blocked.example"
blocked = true
`))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := name.ParseReference("alpine:3")
		if got := m.of(r.Context(), true); len(got) != 1 || got[0].String() != "hub-cache.local:5000/library/alpine" {
			t.Errorf("mirrors of alpine = %v", got)
		}
		r, _ = name.ParseReference("special/thing:1")
		up, err := m.upstream(r)
		if err != nil || up.String() != "special.local/x/thing:1" || up.Context().Scheme() != "http" {
			t.Errorf("upstream of special/thing = %v (%s), %v", up, up.Context().Scheme(), err)
		}
		if got := m.of(up.Context(), true); len(got) != 0 {
			t.Errorf("special has mirrors %v: the more specific entry has none", got)
		}
		r, _ = name.ParseReference("blocked.example/app:1")
		if _, err := m.upstream(r); err == nil || !strings.Contains(err.Error(), "blocked") {
			t.Errorf("blocked registry: err = %v", err)
		}
		if m, err := loadMirrors(filepath.Join(t.TempDir(), "none.conf")); m != nil || err != nil {
			t.Errorf("a missing file: %v, %v; want no mirrors and no error", m, err)
		}
	})
	t.Run("env", func(t *testing.T) {
		f := writeConf(t, "[[registry\n")
		t.Setenv("ROOTSWAP_REGISTRIES_CONF", f)
		if _, err := loadMirrors(""); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("err = %v, want one naming $ROOTSWAP_REGISTRIES_CONF's file", err)
		}
	})
}
