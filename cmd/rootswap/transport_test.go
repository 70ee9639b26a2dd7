package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnknownTransportIsAUsageError: an IMAGE shaped like a transport
// that rootswap does not read is refused before any store or daemon is
// touched, with the list of those it reads; WORD:TAG stays a Docker
// reference.
func TestUnknownTransportIsAUsageError(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	for _, image := range []string{"dockr://reg/web:1", "containers-storage:web", "dir:/srv/web", "http://reg/web:1", "oci-layout:/srv/web"} {
		for _, args := range [][]string{{"import", image}, {"prepare", "web", image}, {"unit", "web", image}} {
			code, out := rootswapIn(t, store, args...)
			if code != 2 || !strings.Contains(out, "unknown transport") || !strings.Contains(out, "oci-archive:") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("%q: exit %d\n%s", args, code, out)
			}
		}
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a refused IMAGE left a store: %v", err)
	}
	for _, image := range []string{"docker:dind", "localhost:5000/web:1", "web:1"} {
		if code, out := rootswapIn(t, store, "unit", "web", image); code != 0 || !strings.Contains(out, " prepare --pull web "+image+"\n") {
			t.Errorf("unit web %s: exit %d\n%s", image, code, out)
		}
	}
}
