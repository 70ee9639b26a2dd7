package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// manyLayersLayout writes an OCI image layout of one image, tagged tag,
// of n layers each adding one small file, uncompressed (the test is about
// index commits, not decompression), and returns its path. It writes the
// files itself: go-containerregistry's layout writer takes minutes over
// thousands of layers.
func manyLayersLayout(t *testing.T, n int, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var m ocispec.Manifest
	m.SchemaVersion, m.MediaType = 2, ocispec.MediaTypeImageManifest
	var cf ocispec.Image
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.RootFS.Type = "layers"
	for i := range n {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		body := []byte(fmt.Sprintf("layer %d\n", i))
		hdrs := []*tar.Header{{Name: "l/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: fmt.Sprintf("l/%05d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}}
		for _, h := range hdrs {
			h.ModTime = time.Unix(1700000000, 0)
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
		}
		tw.Write(body)
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		l := put(buf.Bytes(), ocispec.MediaTypeImageLayer)
		m.Layers = append(m.Layers, l)
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, l.Digest)
	}
	m.Config = put(mustJSON(cf), ocispec.MediaTypeImageConfig)
	md := put(mustJSON(m), ocispec.MediaTypeImageManifest)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion, idx.MediaType = 2, ocispec.MediaTypeImageIndex
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(idx), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestManyLayersWithReaders imports an image of a thousand layers (stored
// and recorded in parallel, one index commit each) while two other
// processes read the index in a loop (`list`, `images`). Nobody may see
// the index as damaged: its damage check must never read the file while
// another process's commit is rewriting it (issue 17, item 2: "damaged:
// page 811 is referred to twice", then `verify` found nothing; here the
// binary before the fix failed this way within a minute). A reader that
// finds the store busy is counted, not failed. Every read holds the index
// while it checks it, so the import takes longer the more the readers
// read: on a 2-core machine 52 s beside the two readers (778 reads) at a
// load of 2; at a load of 20, 55 s alone and 3 m 50 s beside them.
func TestManyLayersWithReaders(t *testing.T) {
	needIntegration(t)
	const layers = 1000
	built := time.Now()
	oci := manyLayersLayout(t, layers, "many")
	t.Logf("an OCI layout of %d layers: %v", layers, time.Since(built).Round(time.Millisecond))
	s := newStore(t)
	s.ok("import", "oci:"+manyLayersLayout(t, 1, "one")+":one") // the store, for the readers
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	reads, busy := 0, 0
	var bad []string
	for i, cmd := range []string{"list", "images"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				r := s.run(cmd)
				mu.Lock()
				reads++
				switch {
				case r.code == 0:
				case strings.Contains(r.stderr, "store busy"):
					busy++
				default:
					bad = append(bad, fmt.Sprintf("reader %d: %s: exit %d: %s", i, cmd, r.code, strings.TrimSpace(r.stderr)))
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	r := s.run("import", "oci:"+oci+":many")
	close(done)
	wg.Wait()
	t.Logf("import of %d layers: %v; %d reads meanwhile, %d found the store busy", layers, time.Since(start).Round(time.Millisecond), reads, busy)
	if r.code != 0 {
		t.Errorf("import: exit %d\n%s", r.code, r.stderr)
	}
	for _, b := range bad {
		t.Error(b)
	}
	if reads == 0 {
		t.Error("no reader ran while the import did")
	}
	if t.Failed() {
		return
	}
	if imgs := s.images(); len(imgs) != 2 {
		t.Errorf("images after the import: %+v, want the two images", imgs)
	}
}
