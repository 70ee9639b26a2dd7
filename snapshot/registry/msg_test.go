package registry

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/snapshot"
)

// A registry's failure is one line that names the image once: no request
// URL (it repeats the name), no library details such as map[Tag:v1].
func TestMessages(t *testing.T) {
	s := newServer(t)
	s.push(t, "app:v1", testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1"))))
	status := http.StatusNotFound
	s.gate = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		code := "UNKNOWN"
		if status == http.StatusNotFound {
			code = "MANIFEST_UNKNOWN"
		}
		w.Write([]byte(`{"errors":[{"code":"` + code + `","message":"it says so","detail":{"Tag":"nope"}}]}`))
		return true
	}
	dead := closedPort(t)
	for _, c := range []struct {
		name, ref string
		status    int
		want      error
		says      string
	}{
		{"404", s.host + "/app:nope", http.StatusNotFound, snapshot.ErrImageNotFound, "registry answered 404 Not Found (MANIFEST_UNKNOWN: it says so)"},
		{"400", s.host + "/app:nope", http.StatusBadRequest, nil, "registry answered 400 Bad Request (UNKNOWN: it says so)"},
		{"500", s.host + "/app:nope", http.StatusInternalServerError, snapshot.ErrUnreachable, "registry answered 500 Internal Server Error"},
		{"refused", dead + "/app:nope", 0, snapshot.ErrUnreachable, "connection refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A case with no status asks another host: s keeps the
			// last, for a late retry of an earlier case to get.
			s.mu.Lock()
			if c.status != 0 {
				status = c.status
			}
			s.mu.Unlock()
			ref := "docker://" + c.ref
			_, err := newSource(Options{Timeout: testTimeout}).Resolve(t.Context(), parseRef(t, ref))
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "image "+ref+": ") || strings.Count(msg, "app") != 1 || strings.Contains(msg, "map[") ||
				strings.Contains(msg, "/v2/") || strings.Contains(msg, "\n") || !strings.Contains(msg, c.says) {
				t.Errorf("message %q: want one line naming the image once and saying %q", msg, c.says)
			}
		})
	}
}
