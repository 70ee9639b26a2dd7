package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestImagesDigests: images --digests shows the manifest digest each
// recorded registry ref resolved to (the one a REPO@sha256:… ref can
// name; the DIGEST column is the config's), --json always carries them,
// and sizes in the table are human-readable while --json keeps bytes.
func TestImagesDigests(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s := storetest.Open(t, root)
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("x", 123456)
	if err := b.Add(cache.Entry{Name: "f", Kind: cache.KindFile, Mode: 0o644, ModTime: time.Unix(1700000000, 0), Size: int64(len(content))}, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	tree := digest.FromString("config")
	ref := "docker://reg.example/web:1"
	if _, err := b.Commit(ctx, tree, []string{ref}); err != nil {
		t.Fatal(err)
	}
	manifest := digest.FromString("manifest")
	if err := s.Update(func(tx *index.Tx) error {
		return tx.PutRef(index.Ref{Ref: ref, Digest: tree, Manifest: manifest, Resolved: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, root, "images", "--digests")
	if !strings.Contains(out, "MANIFEST DIGESTS") || !hasRow(lastLine(out), short(tree), ref) || !strings.HasSuffix(strings.TrimSpace(out), manifest.String()) {
		t.Errorf("images --digests:\n%s", out)
	}
	if !strings.Contains(out, "123.5 kB") {
		t.Errorf("images --digests: no human-readable size:\n%s", out)
	}
	if out := mustRun(t, root, "images"); strings.Contains(out, manifest.String()) {
		t.Errorf("images without --digests shows the manifest:\n%s", out)
	}
	var rows []activate.TreeStatus
	if err := json.Unmarshal([]byte(mustRun(t, root, "images", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0].Manifests) != 1 || rows[0].Manifests[0] != (activate.ManifestRef{Ref: ref, Manifest: manifest}) || rows[0].Bytes != 123456 {
		t.Errorf("images --json: %+v", rows)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
