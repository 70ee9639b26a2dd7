package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/snapshot"
)

// TestPlainHTTPHint: a registry that answers HTTPS with plain HTTP (one
// rootswap does not already speak HTTP to: not loopback, *.local or a
// private address) fails with the hint to mark it insecure in the
// registries file, naming the host and the file; it is no outage.
func TestPlainHTTPHint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	// Every connection, whatever host it names, reaches the plain HTTP
	// server, as a public name of it would.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Listener.Addr().String())
	}}
	src := newSource(Options{Transport: tr, MirrorsFile: "/etc/x/registries.conf"})
	_, err := src.Resolve(t.Context(), parseRef(t, "docker://registry.example.com/app:v1"))
	if err == nil || !strings.Contains(err.Error(), `registry registry.example.com speaks plain HTTP; if you trust it, add [[registry]] location = "registry.example.com", insecure = true to /etc/x/registries.conf`) {
		t.Fatalf("err = %v, want the insecure hint", err)
	}
	if strings.Contains(err.Error(), "name.Insecure") || strings.Count(err.Error(), "registry.example.com/app") > 1 {
		t.Errorf("err = %v: library advice, or the image named twice", err)
	}
	if errors.Is(err, snapshot.ErrUnreachable) {
		t.Errorf("a plain HTTP registry counts as unreachable: %v", err)
	}
}
