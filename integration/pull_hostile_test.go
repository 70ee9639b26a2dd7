package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/escapetest"
)

// Hostile images through a registry: crafted layer tars (archive/tar) and
// manifests, and blobs damaged in the registry's storage after the push.
// Each case must make `rootswap import docker://…` exit 1 with one line,
// leave the victim directory next to the store untouched, and leave the
// store clean (verify, no tree, no layer record of the image).

// hostileEscape leads from a tree's root to the victim next to the store:
// four levels up from trees/sha256/<hex>/ or tmp/<id>/rootfs/.
const hostileEscape = "../../../../victim"

// tarEntry is one entry of a crafted layer.
type tarEntry struct {
	name, link, body string
	typ              byte
	mode             int64
}

func fileEnt(name, body string) tarEntry {
	return tarEntry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dirEnt(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symEnt(name, to string) tarEntry {
	return tarEntry{name: name, link: to, typ: tar.TypeSymlink, mode: 0o777}
}
func linkEnt(name, to string) tarEntry {
	return tarEntry{name: name, link: to, typ: tar.TypeLink, mode: 0o644}
}

// layerTar writes entries as an uncompressed tar.
func layerTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, ModTime: mt, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storedGzip gzips without compression: the blob's size depends only on
// the tar's, so two tars of one size give blobs of one size.
func storedGzip(t *testing.T, tarball []byte) rawLayer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(tarball)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return rawLayer{mediaType: types.OCILayer, blob: buf.Bytes(), diffID: digest.FromBytes(tarball)}
}

// hostileCase is one crafted image. layers are the layer tars, lowest
// first (the base, hostileBase, is prepended); config, if set, replaces
// the config's diffIDs; edit changes the manifest before the push; damage
// changes the registry's copy of a blob after it. mention must all be in
// the error line, and at least one of anyOf if it is not empty (a layer
// may be named by blob digest or by diffID).
type hostileCase struct {
	name    string
	layers  [][]tarEntry
	diffIDs func(ls []rawLayer) []digest.Digest
	edit    func(m *ociManifest)
	damage  func(t *testing.T, reg *registry, ls []rawLayer)
	mention []string
	anyOf   func(ls []rawLayer) []string
}

// hostileBase is every case's lowest layer: a directory, files, and
// symlinks that lead out of the tree, relative and absolute (victimAbs
// is replaced by the victim's absolute path).
func hostileBase(victimAbs string) []tarEntry {
	return []tarEntry{
		dirEnt("etc/"), fileEnt("etc/base", "base layer\n"),
		dirEnt("d/"), fileEnt("d/keep", "keep\n"),
		fileEnt("secret", "only for the base layer\n"),
		symEnt("link", hostileEscape),
		symEnt("abslink", victimAbs),
	}
}

func blobNames(i int) func(ls []rawLayer) []string {
	return func(ls []rawLayer) []string {
		return []string{ls[i].diffID.Encoded()[:12], digest.FromBytes(ls[i].blob).Encoded()[:12]}
	}
}

// overwriteBlob replaces the registry's stored bytes of blob b.
func overwriteBlob(t *testing.T, reg *registry, b []byte, with []byte) {
	t.Helper()
	p := reg.BlobFile(digest.FromBytes(b))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the registry's copy of blob %s: %v", digest.FromBytes(b), err)
	}
	if err := os.WriteFile(p, with, 0o644); err != nil {
		t.Fatal(err)
	}
}

var hostileCases = []hostileCase{
	{name: "whiteout escaping with dotdot",
		layers: [][]tarEntry{{fileEnt(hostileEscape+"/.wh.file", "")}}, mention: []string{".wh.file"}},
	{name: "whiteout escaping after a name",
		layers: [][]tarEntry{{fileEnt("etc/../../../../../victim/.wh.file", "")}}, mention: []string{".wh.file"}},
	{name: "bare whiteout",
		layers: [][]tarEntry{{fileEnt("etc/.wh.", "")}}, mention: []string{"etc/.wh."}},
	{name: "opaque marker under a lower symlink",
		layers: [][]tarEntry{{fileEnt("link/.wh..wh..opq", "")}}, mention: []string{`opaque marker in "link"`, "symlink"}},
	{name: "opaque marker under a lower absolute symlink",
		layers: [][]tarEntry{{fileEnt("abslink/.wh..wh..opq", "")}}, mention: []string{`opaque marker in "abslink"`, "symlink"}},
	{name: "whiteout under a lower symlink",
		layers: [][]tarEntry{{fileEnt("link/.wh.file", "")}}, mention: []string{`whiteout "link/file"`, "symlink"}},
	{name: "directory turned into a symlink, then written through, one layer",
		layers: [][]tarEntry{{symEnt("d", hostileEscape), fileEnt("d/pwned", "pwned\n")}}, mention: []string{"d/pwned"}},
	{name: "directory turned into a symlink, then written through by the next layer",
		layers: [][]tarEntry{{symEnt("d", hostileEscape)}, {fileEnt("d/pwned", "pwned\n")}}, mention: []string{"d/pwned"}},
	{name: "write through a lower symlink",
		layers: [][]tarEntry{{fileEnt("link/pwned", "pwned\n")}}, mention: []string{"link/pwned"}},
	{name: "hard link to a name its own layer's whiteout removed",
		layers: [][]tarEntry{{fileEnt(".wh.secret", ""), linkEnt("stolen", "secret")}}, mention: []string{"stolen"}},
	{name: "hard link to a name a lower whiteout removed",
		layers: [][]tarEntry{{fileEnt(".wh.secret", "")}, {linkEnt("stolen", "secret")}}, mention: []string{"stolen"}},
	{name: "hard link through a lower symlink",
		layers: [][]tarEntry{{linkEnt("stolen", "link/file")}}, mention: []string{"stolen"}},
	{name: "manifest with more layers than the config's diffIDs",
		layers:  [][]tarEntry{{fileEnt("extra", "extra\n")}},
		diffIDs: func(ls []rawLayer) []digest.Digest { return []digest.Digest{ls[0].diffID} }},
	{name: "manifest with fewer layers than the config's diffIDs",
		layers: [][]tarEntry{{fileEnt("extra", "extra\n")}},
		edit:   func(m *ociManifest) { m.Layers = m.Layers[:1] }},
	{name: "config diffID that is not the layer's",
		layers: [][]tarEntry{{fileEnt("extra", "extra\n")}},
		diffIDs: func(ls []rawLayer) []digest.Digest {
			return []digest.Digest{ls[0].diffID, digest.FromString("not the layer")}
		},
		anyOf: func(ls []rawLayer) []string {
			return append(blobNames(1)(ls), digest.FromString("not the layer").Encoded()[:12])
		}},
	{name: "blob replaced by other valid bytes of the same size",
		layers: [][]tarEntry{{fileEnt("payload", "happy\n")}},
		damage: func(t *testing.T, reg *registry, ls []rawLayer) {
			evil := storedGzip(t, layerTar(t, fileEnt("payload", "pwned\n"))).blob
			if len(evil) != len(ls[1].blob) {
				t.Fatalf("the evil blob has %d bytes, the real one %d", len(evil), len(ls[1].blob))
			}
			overwriteBlob(t, reg, ls[1].blob, evil)
		},
		anyOf: blobNames(1)},
	{name: "blob with a flipped byte",
		layers: [][]tarEntry{{fileEnt("payload", strings.Repeat("happy\n", 100))}},
		damage: func(t *testing.T, reg *registry, ls []rawLayer) {
			b := slices.Clone(ls[1].blob)
			b[len(b)/2] ^= 0xff
			overwriteBlob(t, reg, ls[1].blob, b)
		},
		anyOf: blobNames(1)},
	{name: "truncated blob",
		layers: [][]tarEntry{{fileEnt("payload", strings.Repeat("happy\n", 1000))}},
		damage: func(t *testing.T, reg *registry, ls []rawLayer) {
			overwriteBlob(t, reg, ls[1].blob, ls[1].blob[:len(ls[1].blob)/2])
		},
		anyOf: blobNames(1)},
	{name: "manifest claims a layer is bigger",
		layers: [][]tarEntry{{fileEnt("payload", "happy\n")}},
		edit:   func(m *ociManifest) { m.Layers[1].Size += 100 },
		anyOf:  blobNames(1)},
	{name: "manifest claims a layer is smaller",
		layers: [][]tarEntry{{fileEnt("payload", strings.Repeat("happy\n", 100))}},
		edit:   func(m *ociManifest) { m.Layers[1].Size -= 100 },
		anyOf:  blobNames(1)},
}

// hostileImage is a pushed hostile case.
type hostileImage struct {
	ref    string // HOST/NAME:TAG
	repo   string // NAME
	layers []rawLayer
	config digest.Digest
}

// pushHostile pushes case c (its layers over hostileBase(victimAbs)),
// applies its damage, and checks that the registry serves what the case
// claims: the damaged blob no longer hashes to its digest, a size lie is
// in the served manifest. A case the registry quietly refused or
// repaired would test nothing.
func pushHostile(t *testing.T, r *registry, c hostileCase, i int, victimAbs string) hostileImage {
	t.Helper()
	ls := []rawLayer{storedGzip(t, layerTar(t, hostileBase(victimAbs)...))}
	for _, l := range c.layers {
		ls = append(ls, storedGzip(t, layerTar(t, l...)))
	}
	var diffIDs []digest.Digest
	for _, l := range ls {
		diffIDs = append(diffIDs, l.diffID)
	}
	if c.diffIDs != nil {
		diffIDs = c.diffIDs(ls)
	}
	config := imageConfig(t, diffIDs...)
	repo := fmt.Sprintf("rootswap-test/hostile-%d", i)
	ref, _ := pushRaw(t, r, repo+":bad", config, ls, c.edit)
	if c.damage != nil {
		c.damage(t, r, ls)
	}

	m := getManifest(t, r, repo, "bad")
	if n, want := len(m.Layers), len(ls); c.edit == nil && n != want {
		t.Fatalf("the registry serves %d layers, %d pushed", n, want)
	}
	for j, l := range m.Layers {
		body, err := fetchBlob(r, repo, l.Digest)
		intact := err == nil && digest.FromBytes(body) == l.Digest && int64(len(body)) == l.Size
		switch {
		case c.damage != nil && j == 1 && intact:
			t.Fatalf("blob %d (%s): served intact after the damage", j, l.Digest)
		case c.edit != nil && j == 1 && intact:
			t.Fatalf("blob %d (%s): the manifest's size %d is the real one: the lie did not reach the registry", j, l.Digest, l.Size)
		case c.damage == nil && c.edit == nil && !intact:
			t.Fatalf("blob %d (%s): served damaged (%d bytes, %v), the case wants it intact", j, l.Digest, len(body), err)
		}
	}
	return hostileImage{ref: ref, repo: repo, layers: ls, config: digest.FromBytes(config)}
}

// TestPullHostileImages pushes every hostile case and checks that the
// registry serves it as the case means it (see pushHostile); it needs no
// rootswap, and TestPullHostile builds on it.
func TestPullHostileImages(t *testing.T) {
	needIntegration(t)
	r := startRegistry(t, registryOpts{})
	for i, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			img := pushHostile(t, r, c, i, filepath.Join(t.TempDir(), "victim"))
			t.Logf("%s: %d layers, config %s", img.ref, len(img.layers), img.config)
		})
	}
}

// TestPullHostile imports every hostile case from the registry, each into
// a store of its own next to a victim directory: exit 1 with one error
// line naming the image and the entry or layer at fault, the victim and
// the store's neighbours untouched, no tree, no layer record of any of
// the image's layers (the good base included: the image failed, so none
// of it is referenced), and the store's verify clean (newStore's check).
func TestPullHostile(t *testing.T) {
	needIntegration(t)
	r := startRegistry(t, registryOpts{})
	// The control: the base layer alone, and the base with a harmless
	// second layer, import. Otherwise every refusal below could be one of
	// the base (its symlinks lead out of the tree, as images may).
	for i, c := range []hostileCase{
		{name: "control: the base alone"},
		{name: "control: the base and one more layer", layers: [][]tarEntry{{fileEnt("extra", "extra\n"), fileEnt(".wh.secret", "")}}},
	} {
		s := newStore(t)
		img := pushHostile(t, r, c, 100+i, escapetest.Victim(t, filepath.Dir(s.root)))
		if got := strings.TrimSpace(s.ok("import", "docker://"+img.ref)); got != img.config.String() {
			t.Fatalf("%s: import printed %s, want %s", c.name, got, img.config)
		}
		if l, err := os.Readlink(filepath.Join(s.view(img.config.String()), "link")); err != nil || l != hostileEscape {
			t.Fatalf("%s: the tree's link is %q %v, want a symlink to %s", c.name, l, err, hostileEscape)
		}
	}
	for i, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			dir := filepath.Dir(s.root)
			victim := escapetest.Victim(t, dir)
			img := pushHostile(t, r, c, i, victim)
			before := escapetest.Fingerprint(t, victim)
			neighbours := func() []string {
				var out []string
				for _, n := range escapetest.Names(t, dir) {
					if n != "store" {
						out = append(out, n)
					}
				}
				return out
			}
			beside := neighbours()

			mention := append([]string{img.repo}, c.mention...)
			res := s.fail(1, mention, "import", "docker://"+img.ref)
			lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
			if len(lines) != 1 || strings.Contains(res.stderr, "panic") {
				t.Errorf("stderr has %d lines, want one error line:\n%s", len(lines), res.stderr)
			}
			if c.anyOf != nil {
				names := c.anyOf(img.layers)
				if !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(res.stderr, n) }) {
					t.Errorf("error %q names none of %v (the layer at fault)", strings.TrimSpace(res.stderr), names)
				}
			}
			t.Logf("refused: %s", strings.TrimSpace(res.stderr))

			if d := escapetest.Diff(before, escapetest.Fingerprint(t, victim)); d != "" {
				t.Fatalf("PATH ESCAPE: the victim changed:\n%s", d)
			}
			if got := neighbours(); !slices.Equal(got, beside) {
				t.Fatalf("PATH ESCAPE: next to the store there is now %q, was %q", got, beside)
			}
			if _, err := os.Stat(filepath.Join(s.root, "index.db")); err != nil {
				return // refused before the store was created: nothing in it
			}
			if ims := s.images(); len(ims) != 0 {
				t.Errorf("the store has images after the refusal: %+v", ims)
			}
			if _, err := os.Stat(s.treePath(img.config.String())); !os.IsNotExist(err) {
				t.Errorf("tree %s exists after the refusal (%v)", img.config, err)
			}
			// Layers that passed their own checks may stay cached (they
			// are content-addressed and verified; no tree lists them); a
			// gc removes them, and then nothing of the image is left.
			s.ok("gc")
			recs := layerRecords(t, s)
			for _, l := range img.layers {
				if recs[l.diffID] {
					t.Errorf("the store keeps a layer record of %s after the refusal and a gc", l.diffID)
				}
			}
		})
	}
}

// fetchBlob GETs blob d of repo; a short body is an error, not a failure
// of the test (a truncated blob's body is short).
func fetchBlob(r *registry, repo string, d digest.Digest) ([]byte, error) {
	resp, err := http.Get("http://" + r.Addr() + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return body, err
}
