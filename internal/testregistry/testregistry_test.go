package testregistry

import (
	"maps"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The access log's blob GETs are counted with their response sizes;
// HEADs, manifests and other paths are not blob GETs; markers are seen and
// not counted as requests.
func TestAccessLog(t *testing.T) {
	a, c := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("c", 64)
	lines := `127.0.0.1 - - [02/Dec/2026:01:01:22 +0000] "GET /v2/rootswap-bench/quick/blobs/` + a + ` HTTP/1.1" 200 2516582 "" "docker/20.10.24"
127.0.0.1 - - [02/Dec/2026:01:01:22 +0000] "HEAD /v2/rootswap-bench/quick/blobs/sha256:` + strings.Repeat("b", 64) + ` HTTP/1.1" 200 0 "" "skopeo"
127.0.0.1 - - [02/Dec/2026:01:01:22 +0000] "GET /v2/rootswap-bench/quick/manifests/app HTTP/1.1" 200 1234 "" "skopeo"
127.0.0.1 - - [02/Dec/2026:01:01:22 +0000] "GET /v2/rootswap-bench/quick/blobs/` + c + ` HTTP/1.1" 307 - "" "podman"
127.0.0.1 - - [02/Dec/2026:01:01:22 +0000] "GET /v2/?rootswap-mark=1 HTTP/1.1" 200 2 "" "Go-http-client/1.1"
`
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{counts: Counts{BlobGets: map[digest.Digest]int{}, Manifests: map[string]int{}}, marks: map[string]bool{}}
	r.cond = sync.NewCond(&r.mu)
	go func() { pw.WriteString(lines); pw.Close() }()
	r.readAccessLog(pr)
	want := Counts{BlobGets: map[digest.Digest]int{digest.Digest(a): 1, digest.Digest(c): 1}, BlobBytes: 2516582,
		Manifests: map[string]int{"GET": 1}, Requests: 4}
	if got := r.counts; !maps.Equal(got.BlobGets, want.BlobGets) || !maps.Equal(got.Manifests, want.Manifests) ||
		got.BlobBytes != want.BlobBytes || got.Requests != want.Requests {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	if !r.marks["1"] || !r.logDone {
		t.Errorf("marker seen %v, log done %v; want both", r.marks["1"], r.logDone)
	}
}
