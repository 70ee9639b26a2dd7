package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// fakeSource is an image's content: it serves tar streams from memory and counts what is asked of it.
type fakeSource struct {
	layers  [][]byte // image's rootfs streams, lowest first
	diffIDs bool     // the layers name their diffIDs: an image of layers, not an export
	asked   int      // calls of Layers
	opened  int
	closed  int
}

func (f *fakeSource) Config(context.Context) (snapshot.Config, error) {
	return snapshot.Config{}, nil
}

func (f *fakeSource) Layers(context.Context) ([]snapshot.Layer, error) {
	f.asked++
	var ls []snapshot.Layer
	for _, b := range f.layers {
		ls = append(ls, fakeLayer{f, b})
	}
	return ls, nil
}

type fakeLayer struct {
	f *fakeSource
	b []byte
}

func (l fakeLayer) DiffID() digest.Digest {
	if !l.f.diffIDs {
		return ""
	}
	return digest.FromBytes(l.b)
}

func (fakeLayer) Blob() digest.Digest { return "" }

func (l fakeLayer) Open(context.Context) (io.ReadCloser, error) {
	l.f.opened++
	return closeCounter{bytes.NewReader(l.b), &l.f.closed}, nil
}

type closeCounter struct {
	io.Reader
	n *int
}

func (c closeCounter) Close() error { *c.n++; return nil }

type progressCounter struct{ updates, done int }

func (p *progressCounter) Update(bytes, entries int64) { p.updates++ }
func (p *progressCounter) Done()                       { p.done++ }

// TestImportImageFromSource: an image streams from its source once, every
// stream opened is closed whatever the outcome, and a refused stream
// leaves nothing behind.
func TestImportImageFromSource(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "store"))
	d := digest.FromString("image")
	src := &fakeSource{layers: [][]byte{tarball(file("etc/version", "v1", 0o644))}}
	var logs bytes.Buffer
	p := &progressCounter{}
	opt := snapshot.ImportOptions{Progress: p, Log: slog.New(slog.NewTextHandler(&logs, nil))}

	tr, created, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:1", Bare: true}, Digest: d, Content: src}, opt)
	if err != nil || !created || tr.Digest != d || tr.Files == 0 {
		t.Fatalf("first import: %+v created %v, %v", tr, created, err)
	}
	if src.opened != 1 || src.closed != 1 || p.updates == 0 || p.done != 1 || !strings.Contains(logs.String(), "msg=imported") {
		t.Errorf("first import: opened %d closed %d, progress %+v, log %q", src.opened, src.closed, p, logs.String())
	}
	if _, created, err = snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:1", Bare: true}, Digest: d, Content: src}, opt); err != nil || created || src.asked != 1 {
		t.Errorf("second import: created %v, %v; the source was asked %d times, want once", created, err, src.asked)
	}

	bad := &fakeSource{layers: [][]byte{tarball(file("../escape", "x", 0o644))}}
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "bad:1", Bare: true}, Digest: digest.FromString("bad"), Content: bad}, snapshot.ImportOptions{}); !errors.Is(err, snapshot.ErrUnsafeEntry) || !strings.Contains(err.Error(), "bad:1") {
		t.Errorf("hostile stream: %v, want a refusal naming bad:1", err)
	}
	if bad.opened != 1 || bad.closed != 1 {
		t.Errorf("hostile stream: opened %d, closed %d", bad.opened, bad.closed)
	}
	if _, ok, err := snapshot.Lookup(s, digest.FromString("bad")); ok || err != nil {
		t.Errorf("a refused image has a tree: %v %v", ok, err)
	}

	layered := &fakeSource{layers: [][]byte{tarball(file("a", "1", 0o644)), tarball(file("b", "2", 0o644))}}
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "layered:1", Bare: true}, Digest: digest.FromString("layered"), Content: layered}, snapshot.ImportOptions{}); err == nil || layered.opened != 0 {
		t.Errorf("two layers: %v, %d opened; want a refusal before any stream", err, layered.opened)
	}
	// An Image no source made has no content: an error, never a panic.
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Digest: digest.FromString("none")}, snapshot.ImportOptions{}); err == nil {
		t.Error("an image without content imported")
	}
	storetest.CheckIdle(t, s)
}

// TestImportRecordsRefOnceStored: an image that asks to be recorded
// (Image.Record) has its ref recorded once its tree is stored, whether
// imported now or found; a refused one leaves the record as it was.
func TestImportRecordsRefOnceStored(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	ref := snapshot.Ref{Transport: snapshot.Docker, Name: "reg.example/app:stable"}
	record := func() digest.Digest {
		d, _, _, err := s.LookupRef(ref.String())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := snapshot.Image{Ref: ref, Digest: digest.FromString("good"), Manifest: digest.FromString("m-good"), Record: true,
		Content: &fakeSource{layers: [][]byte{tarball(file("etc/version", "good", 0o644))}}}
	if _, _, err := snapshot.ImportImage(ctx, s, good, snapshot.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := record(); got != good.Digest {
		t.Fatalf("after the import the ref is recorded at %q, want %s", got, good.Digest)
	}

	bad := snapshot.Image{Ref: ref, Digest: digest.FromString("bad"), Manifest: digest.FromString("m-bad"), Record: true,
		Content: &fakeSource{layers: [][]byte{tarball(file("../escape", "x", 0o644))}}}
	if _, _, err := snapshot.ImportImage(ctx, s, bad, snapshot.ImportOptions{}); err == nil {
		t.Fatal("a hostile image imported")
	}
	if got := record(); got != good.Digest {
		t.Fatalf("after a refused import the ref is recorded at %q, want still %s", got, good.Digest)
	}

	// Found in the store (the tag moved back): recorded, nothing read.
	again := good
	again.Content = &fakeSource{}
	if err := s.RecordRef(ref.String(), digest.FromString("other"), digest.FromString("m-other")); err != nil {
		t.Fatal(err)
	}
	if _, created, err := snapshot.ImportImage(ctx, s, again, snapshot.ImportOptions{}); err != nil || created || again.Content.(*fakeSource).asked != 0 {
		t.Fatalf("import of a stored image: created %v, %v, asked %d", created, err, again.Content.(*fakeSource).asked)
	}
	if got := record(); got != good.Digest {
		t.Fatalf("after finding the tree the ref is recorded at %q, want %s", got, good.Digest)
	}

	// An image that does not ask (the daemon's, a file's) records nothing.
	quiet := snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:1", Bare: true}, Digest: digest.FromString("quiet"),
		Content: &fakeSource{layers: [][]byte{tarball(file("etc/version", "quiet", 0o644))}}}
	if _, _, err := snapshot.ImportImage(ctx, s, quiet, snapshot.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if d, _, ok, err := s.LookupRef(quiet.Ref.String()); ok || err != nil {
		t.Fatalf("an image that asks for no record was recorded at %s (%v)", d, err)
	}
}

// TestImportAdmit: the policy's check (ImportOptions.Admit) runs before
// any layer is asked for; a refusal stores nothing and records no ref, an
// admission is recorded with the tree, and a stored tree is not checked
// again.
func TestImportAdmit(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	ref := snapshot.Ref{Transport: snapshot.Docker, Name: "reg.example/app:1"}
	src := &fakeSource{layers: [][]byte{tarball(file("etc/version", "v1", 0o644))}}
	img := snapshot.Image{Ref: ref, Digest: digest.FromString("v1"), Manifest: digest.FromString("m1"), Record: true, Content: src}
	refused := errors.New("rejected by policy")
	checks := 0
	admit := func(_ context.Context, got snapshot.Image) (string, error) {
		checks++
		if src.asked != 0 {
			t.Errorf("the policy is asked after %d calls of Layers", src.asked)
		}
		if got.Manifest != img.Manifest {
			t.Errorf("the policy is asked about manifest %s, want %s", got.Manifest, img.Manifest)
		}
		return "", refused
	}
	if _, _, err := snapshot.ImportImage(ctx, s, img, snapshot.ImportOptions{Admit: admit}); !errors.Is(err, refused) {
		t.Fatalf("a refused image: %v, want the refusal", err)
	}
	if _, ok, err := snapshot.Lookup(s, img.Digest); ok || err != nil || src.asked != 0 {
		t.Fatalf("a refused image: stored %v (%v), layers asked %d times", ok, err, src.asked)
	}
	if d, _, ok, _ := s.LookupRef(ref.String()); ok {
		t.Fatalf("a refused image's ref is recorded at %s", d)
	}
	admitted := func(context.Context, snapshot.Image) (string, error) {
		checks++
		return "sigstoreSigned key sha256:ab (scope default)", nil
	}
	tr, created, err := snapshot.ImportImage(ctx, s, img, snapshot.ImportOptions{Admit: admitted})
	if err != nil || !created || tr.Admitted != "sigstoreSigned key sha256:ab (scope default)" {
		t.Fatalf("an admitted image: %+v created %v, %v", tr, created, err)
	}
	if got, _, _ := snapshot.Lookup(s, img.Digest); got.Admitted != tr.Admitted {
		t.Fatalf("the index records admission %q, want %q", got.Admitted, tr.Admitted)
	}
	checks = 0
	if _, created, err := snapshot.ImportImage(ctx, s, img, snapshot.ImportOptions{Admit: admit}); err != nil || created || checks != 0 {
		t.Fatalf("a stored image: created %v, %v, checked %d times", created, err, checks)
	}

	// A stored tree is re-checked offline (Readmit) from its record; a
	// refusal records no ref.
	other := img
	other.Ref = snapshot.Ref{Transport: snapshot.Docker, Name: "reg.example/other:1"}
	var seen string
	readmit := func(_ snapshot.Image, tr index.Tree) error { seen = tr.Admitted; return refused }
	if _, _, err := snapshot.ImportImage(ctx, s, other, snapshot.ImportOptions{Admit: admit, Readmit: readmit}); !errors.Is(err, refused) || seen != tr.Admitted || checks != 0 {
		t.Fatalf("a stored tree refused on re-check: %v, record seen %q, checked %d times", err, seen, checks)
	}
	if d, _, ok, _ := s.LookupRef(other.Ref.String()); ok {
		t.Fatalf("a refused stored tree's ref is recorded at %s", d)
	}
}

// TestImportCrashKeepsConfigWithTree kills an import (a flattened export
// and an image of layers) at the failpoints around the tree's index
// commit, and checks that the tree, its config and its admission are
// stored all together or not at all: a crash never leaves a tree that
// runs without its image's config, or that reads as imported with no
// policy.
func TestImportCrashKeepsConfigWithTree(t *testing.T) {
	const child = "ROOTSWAP_TEST_IMPORT_CHILD"
	const how = "sigstoreSigned key sha256:ab (scope default)"
	d := digest.FromString("crashed image")
	if spec := os.Getenv(child); spec != "" {
		kind, root, _ := strings.Cut(spec, ":")
		src := &fakeSource{layers: [][]byte{tarball(file("etc/version", "v1", 0o644))}}
		if kind == "layered" {
			src = &fakeSource{layers: [][]byte{tarball(file("a", "1", 0o644)), tarball(file("b", "2", 0o644))}, diffIDs: true}
		}
		img := snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg.example/app:1"}, Digest: d, Content: src}
		admit := func(context.Context, snapshot.Image) (string, error) { return how, nil }
		if _, _, err := snapshot.ImportImage(context.Background(), storetest.Open(t, root), img, snapshot.ImportOptions{Admit: admit}); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, kind := range []string{"flat", "layered"} {
		for _, point := range []string{"", "cache-before-index", "cache-after-index"} {
			root := filepath.Join(t.TempDir(), "store")
			cmd := exec.Command(os.Args[0], "-test.run=^TestImportCrashKeepsConfigWithTree$")
			cmd.Env = append(os.Environ(), child+"="+kind+":"+root, failpoint.Env+"="+point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if killed != (point != "") || (point == "" && err != nil) {
				t.Fatalf("%s import, failpoint %q: %v, killed %v: %s", kind, point, err, killed, out)
			}
			s := storetest.Open(t, root)
			tr, hasTree, err := snapshot.Lookup(s, d)
			if err != nil {
				t.Fatal(err)
			}
			var config []byte
			err = s.View(func(tx *index.Tx) (err error) { config, err = tx.Config(d); return err })
			if err != nil && !errors.Is(err, index.ErrNotFound) {
				t.Fatal(err)
			}
			want := point != "cache-before-index"
			if hasTree != want || (config != nil) != want || (tr.Admitted == how) != want {
				t.Errorf("%s import killed at %q: tree stored %v, config %q, admitted %q; want all or nothing (all: %v)",
					kind, point, hasTree, config, tr.Admitted, want)
			}
		}
	}
}
