package activate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// stallingSource resolves like its fakeSource, but every layer stops
// with the source unreachable (a registry that stopped sending a blob).
type stallingSource struct{ *fakeSource }

func (s stallingSource) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	img, err := s.fakeSource.Resolve(ctx, ref)
	img.Content = stalledImage{}
	return img, err
}

func (s stallingSource) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	img, err := s.fakeSource.Pull(ctx, ref)
	img.Content = stalledImage{}
	return img, err
}

type stalledImage struct{}

func (stalledImage) Config(context.Context) (snapshot.Config, error) { return snapshot.Config{}, nil }
func (stalledImage) Layers(context.Context) ([]snapshot.Layer, error) {
	return []snapshot.Layer{stalledLayer{}}, nil
}

type stalledLayer struct{}

func (stalledLayer) DiffID() digest.Digest { return "" }
func (stalledLayer) Blob() digest.Digest   { return "" }
func (stalledLayer) Open(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(versionTar("v9")[:512]), stalled{})), nil
}

type stalled struct{}

func (stalled) Read([]byte) (int, error) {
	return 0, fmt.Errorf("blob: %w: no byte within 1s", snapshot.ErrUnreachable)
}

// TestPrepareSourceCannotGive: what prepare does, and says, when the
// source cannot give the image: start from cache with one warning only
// when the reference resolved here before; otherwise the source's own
// error, in one line.
func TestPrepareSourceCannotGive(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*fakeSource, *bytes.Buffer, func(name, ref string, opt PrepareOptions) (Outcome, error)) {
		s := newStore(t)
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		src := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2", "oci:/srv/app": "v3"}}
		for _, m := range [][2]string{{"m", "app:1"}, {"local", "oci:/srv/app"}} {
			if _, err := Prepare(ctx, s, src, log, m[0], testRef(m[1]), PrepareOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		logs.Reset()
		return src, &logs, func(name, ref string, opt PrepareOptions) (Outcome, error) {
			return Prepare(ctx, s, src, log, name, testRef(ref), opt)
		}
	}
	oneLine := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("err = %v, want one line saying %q", err, want)
		}
	}
	t.Run("never resolved, source down", func(t *testing.T) {
		src, logs, prepare := setup(t)
		src.down = true
		o, err := prepare("m", "typo:1", PrepareOptions{Pull: true})
		oneLine(t, err, "never resolved")
		if !errors.Is(err, snapshot.ErrUnreachable) || o.Change == FromCache || strings.Contains(logs.String(), "keeping the cached tree") {
			t.Fatalf("a reference that never resolved, source down: %+v, %v, log %q", o, err, logs.String())
		}
	})
	t.Run("resolved before, source down", func(t *testing.T) {
		src, logs, prepare := setup(t)
		src.down = true
		o, err := prepare("m", "app:1", PrepareOptions{Pull: true})
		if err != nil || o.Change != FromCache || strings.Count(logs.String(), "level=WARN") != 1 {
			t.Fatalf("%+v, %v, log %q; want from cache with one warning", o, err, logs.String())
		}
	})
	t.Run("pull refused, no local image", func(t *testing.T) {
		src, logs, prepare := setup(t)
		src.pullErr = errors.New("image app:9: pull access denied")
		_, err := prepare("m", "app:9", PrepareOptions{Pull: true})
		oneLine(t, err, "pull access denied")
		if strings.Contains(logs.String(), "using the local image") {
			t.Fatalf("said it used a local image that does not exist: %q", logs.String())
		}
	})
	t.Run("pull refused, a local image", func(t *testing.T) {
		src, logs, prepare := setup(t)
		src.pullErr = errors.New("image app:2: pull access denied")
		if o, err := prepare("m", "app:2", PrepareOptions{Pull: true}); err != nil || o.Change != Imported {
			t.Fatalf("%+v, %v", o, err)
		}
		if strings.Count(logs.String(), "pull failed; using the local image") != 1 {
			t.Fatalf("log %q, want one warning that the local image is used", logs.String())
		}
	})
	t.Run("config digest", func(t *testing.T) {
		for _, down := range []bool{false, true} {
			src, _, prepare := setup(t)
			src.down = down // a registry answers 500 (unreachable) or 404
			ref := "app@" + digest.FromString("v1").String()
			for _, name := range []string{"m", "new"} {
				o, err := prepare(name, ref, PrepareOptions{Pull: true})
				oneLine(t, err, "rootswap images --digests")
				if o.Change == FromCache || errors.Is(err, snapshot.ErrUnreachable) {
					t.Fatalf("%s, source down %t: %+v, %v", name, down, o, err)
				}
			}
		}
	})
	t.Run("local source gone", func(t *testing.T) {
		src, logs, prepare := setup(t)
		delete(src.images, "oci:/srv/app")
		o, err := prepare("local", "oci:/srv/app", PrepareOptions{})
		if err != nil || o.Change != FromCache || !o.Gone || strings.Count(logs.String(), "level=WARN") != 1 || o.Digest != digest.FromString("v3") {
			t.Fatalf("%+v, %v, log %q; want from cache with one warning", o, err, logs.String())
		}
		if !strings.HasSuffix(o.String(), "(cached, image gone from the fake)") {
			t.Errorf("outcome %q", o)
		}
		// Nor for one with nothing cached.
		_, err = prepare("new", "oci:/srv/app", PrepareOptions{})
		if !errors.Is(err, snapshot.ErrImageNotFound) {
			t.Fatalf("a new machine of a lost source: %v", err)
		}
	})
	t.Run("source stops mid-import", func(t *testing.T) {
		s := newStore(t)
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		good := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2"}}
		if _, err := Prepare(ctx, s, good, log, "m", daemonRef("app:1"), PrepareOptions{}); err != nil {
			t.Fatal(err)
		}
		logs.Reset()
		stall := stallingSource{good}
		o, err := Prepare(ctx, s, stall, log, "m", daemonRef("app:2"), PrepareOptions{Pull: true})
		if err != nil || o.Change != FromCache || o.Digest != digest.FromString("v1") || o.Generation != 1 || strings.Count(logs.String(), "level=WARN") != 1 {
			t.Fatalf("cached machine: %+v, %v, log %q; want from cache (generation 1) with one warning", o, err, logs.String())
		}
		_, err = Prepare(ctx, s, stall, log, "new", daemonRef("app:2"), PrepareOptions{Pull: true})
		oneLine(t, err, "no cached tree")
		if !errors.Is(err, snapshot.ErrUnreachable) {
			t.Fatalf("new machine: %v", err)
		}
	})
}

// TestUpdatePullRefusedNoLocalImage: update, like prepare, does not say
// it uses a local image that does not exist: the pull's error is the
// machine's.
func TestUpdatePullRefusedNoLocalImage(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &fakeSource{images: map[string]string{"app:stable": "v1"}}
	if _, err := Prepare(ctx, s, src, log, "a", daemonRef("app:stable"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	delete(src.images, "app:stable")
	src.pullErr = errors.New("image app:stable: pull access denied")
	logs.Reset()
	sd := newFakeSystemd(s, "a")
	sources := func(r string) (snapshot.Ref, snapshot.Source, error) { return testRef(r), src, nil }
	res, err := Update(ctx, s, sources, log, []string{"a"}, updateOpts(sd.dial))
	if err == nil && (len(res) != 1 || !res[0].Failed || !strings.Contains(res[0].String(), "pull access denied")) {
		t.Errorf("update: %+v, %v; want machine a failed with the pull's error", res, err)
	}
	if err != nil && !strings.Contains(err.Error(), "pull access denied") {
		t.Errorf("update: %v; want the pull's error", err)
	}
	if strings.Contains(logs.String(), "using the local image") {
		t.Errorf("said it used a local image that does not exist: %q", logs.String())
	}
}
