package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// refNameAnnotation names a manifest of an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// fileImage is an image of a layout or archive as Content: read when it
// was resolved, its layers read from the file again when opened.
type fileImage struct {
	ref    snapshot.Ref
	config digest.Digest
	raw    []byte // the config, verified against config
	layers []snapshot.Layer
}

func (f *fileImage) Config(context.Context) (snapshot.Config, error) {
	return parseConfig(f.ref, f.config, f.raw)
}

// Layers returns the image's layers; each Open reads its blob from the
// file again and verifies it.
func (f *fileImage) Layers(context.Context) ([]snapshot.Layer, error) { return f.layers, nil }

// fileError classifies a failure to read an image file: a missing one is
// a missing image.
func fileError(ref snapshot.Ref, err error) error {
	// The reference already names its path: say only what happened to it,
	// or to the file in it (a layout's index.json).
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		if rel, rerr := filepath.Rel(ref.Path, pe.Path); rerr == nil && rel == "." {
			err = pe.Err
		} else if rerr == nil && filepath.IsLocal(rel) {
			err = fmt.Errorf("%s: %w", rel, pe.Err)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %s: %w: %v", ref, snapshot.ErrImageNotFound, err)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// Layout is an OCI image layout directory as a snapshot.Source, for
// oci:PATH[:TAG] refs. Pull does nothing; Resolve reads the layout each
// time. It is safe for concurrent use.
type Layout struct {
	platform v1.Platform
	err      error
}

var _ snapshot.Source = (*Layout)(nil)

// NewLayout returns an OCI layout source; of opt only Platform counts.
func NewLayout(opt Options) *Layout {
	l := &Layout{}
	l.platform, l.err = parsePlatform(opt.Platform)
	return l
}

// String is what a user calls this source in messages.
func (l *Layout) String() string { return "oci" }

// Pull is Resolve: a layout is read where it is.
func (l *Layout) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	return l.Resolve(ctx, ref)
}

// Resolve reads the layout's index.json and returns the image of the
// manifest tagged TAG (by its org.opencontainers.image.ref.name
// annotation), or, without TAG, of its only manifest; an index among
// them picks the platform's manifest. Manifests and config are verified
// against the descriptors that name them.
func (l *Layout) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if l.err != nil {
		return snapshot.Image{}, l.err
	}
	if ref.Transport != snapshot.OCI || ref.Path == "" {
		return snapshot.Image{}, fmt.Errorf("image %s: not an oci:PATH[:TAG] reference", ref)
	}
	fi, top, err := resolveLayout(dirFiles(ref.Path), ref.Path, ref.Tag, l.platform)
	if err != nil {
		return snapshot.Image{}, fileError(ref, err)
	}
	fi.ref = ref
	return snapshot.Image{Ref: ref, Digest: fi.config, Manifest: top, Content: fi}, nil
}

// layoutFiles are the files of an OCI layout, by their names in it
// ("index.json", "blobs/sha256/HEX"): a directory's, or an archive's.
type layoutFiles interface {
	// ReadFile returns file name, which must be no longer than limit.
	ReadFile(name string, limit int64) ([]byte, error)
	// Open returns file name's content; the caller closes it.
	Open(name string) (io.ReadCloser, int64, error)
}

// dirFiles is a layout directory's files.
type dirFiles string

func (d dirFiles) ReadFile(name string, limit int64) ([]byte, error) {
	rc, _, err := d.Open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s: more than the %d bytes it may have", name, limit)
	}
	return b, err
}

func (d dirFiles) Open(name string) (io.ReadCloser, int64, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// blobName is where a layout keeps blob d: d is a parsed digest, so the
// name holds no separator of its own.
func blobName(d digest.Digest) string {
	return "blobs/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// resolveLayout reads layout files's index.json and returns the image
// of the manifest tagged tag (by its org.opencontainers.image.ref.name
// annotation), or, without tag, of its only manifest (its Ref left for
// the caller to set), and the digest index.json lists for it; an index
// among them picks platform's manifest. Manifests and config are verified against the
// descriptors that name them; each layer's blob when it is read. where
// names the layout in layers' messages. A missing file is an error
// wrapping fs.ErrNotExist.
func resolveLayout(files layoutFiles, where, tag string, platform v1.Platform) (*fileImage, digest.Digest, error) {
	ib, err := files.ReadFile("index.json", manifestLimit)
	if err != nil {
		return nil, "", err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(ib))
	if err != nil {
		return nil, "", fmt.Errorf("index.json: %w", err)
	}
	desc, err := pickTag(idx, tag)
	if err != nil {
		return nil, "", err
	}
	top := digest.Digest(desc.Digest.String())
	blob := func(d v1.Descriptor) ([]byte, error) {
		if d.Size > manifestLimit || d.Size < 0 {
			return nil, fmt.Errorf("blob %s: size %d out of bounds", d.Digest, d.Size)
		}
		dd, err := digest.Parse(d.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("blob %q: %w", d.Digest, err)
		}
		b, err := files.ReadFile(blobName(dd), d.Size)
		if err != nil {
			return nil, err
		}
		return b, verify(b, d)
	}
	mb, err := blob(desc)
	if err != nil {
		return nil, "", err
	}
	if isIndex(desc.MediaType, mb) {
		child, err := v1.ParseIndexManifest(bytes.NewReader(mb))
		if err != nil {
			return nil, "", fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		if desc, err = pickPlatform(child, platform); err != nil {
			return nil, "", err
		}
		if mb, err = blob(desc); err != nil {
			return nil, "", err
		}
	}
	img, err := parseImage(mb, blob)
	if err != nil {
		return nil, "", err
	}
	ls := make([]snapshot.Layer, len(img.diffIDs))
	for i, ld := range img.manifest.Layers {
		h := digest.Digest(ld.Digest.String()) // parseImage parsed it
		ls[i] = &layer{
			diffID: img.diffIDs[i],
			blob:   h,
			size:   ld.Size,
			name:   fmt.Sprintf("layer %s (blob %s of %s)", img.diffIDs[i], h, where),
			fetch: func(context.Context) (io.ReadCloser, bool, error) {
				rc, _, err := files.Open(blobName(h))
				return rc, false, err
			},
		}
	}
	return &fileImage{config: img.config, raw: img.rawConfig, layers: ls}, top, nil
}

// manifestLimit bounds a manifest or config read whole into memory.
const manifestLimit = 16 << 20

// pickTag returns the manifest of idx tagged tag, or without tag its only
// one; an error lists the tags there are.
func pickTag(idx *v1.IndexManifest, tag string) (v1.Descriptor, error) {
	var tags []string
	for _, m := range idx.Manifests {
		t := m.Annotations[refNameAnnotation]
		if tag != "" && t == tag {
			return m, nil
		}
		if t != "" {
			tags = append(tags, t)
		}
	}
	if tag == "" && len(idx.Manifests) == 1 {
		return idx.Manifests[0], nil
	}
	slices.Sort(tags)
	have := "no tags"
	if len(tags) > 0 {
		have = "tags " + strings.Join(slices.Compact(tags), ", ")
	}
	switch {
	case tag != "":
		return v1.Descriptor{}, fmt.Errorf("%w: the layout has no tag %q, only %s", snapshot.ErrImageNotFound, tag, have)
	case len(idx.Manifests) == 0:
		return v1.Descriptor{}, fmt.Errorf("%w: the layout is empty", snapshot.ErrImageNotFound)
	}
	return v1.Descriptor{}, fmt.Errorf("the layout holds %d manifests (%s): name one as oci:PATH:TAG", len(idx.Manifests), have)
}

// Archive is a `docker save` tarball as a snapshot.Source, for
// docker-archive:PATH[:REF] refs: the legacy layout (ID/layer.tar,
// ID.json) and the one Docker 25 and later write (blobs/sha256/…), both
// described by the tarball's manifest.json, plain or compressed with gzip
// (`docker save | gzip`) or zstd. Pull does nothing; Resolve reads the
// file each time it changed. It is safe for concurrent use; Close
// releases the files Resolve opened.
type Archive struct {
	tars tarCache
}

var _ snapshot.Source = (*Archive)(nil)

// NewArchive returns a docker-archive source; of opt only TempDir
// counts (a tarball holds one platform's images).
func NewArchive(opt Options) *Archive { return &Archive{tars: tarCache{tmpDir: opt.TempDir}} }

// String is what a user calls this source in messages.
func (a *Archive) String() string { return "docker-archive" }

// Close releases the archives Resolve opened; the streams of their
// layers must be closed first.
func (a *Archive) Close() error { return a.tars.Close() }

// Pull is Resolve: an archive is read where it is.
func (a *Archive) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	return a.Resolve(ctx, ref)
}

// Resolve reads the tarball's manifest.json and returns the image tagged
// REF (as `docker save` records it in RepoTags), or
// without REF of its only image: the digest of its config, which a
// config named by digest must match.
func (a *Archive) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if ref.Transport != snapshot.DockerArchive || ref.Path == "" {
		return snapshot.Image{}, fmt.Errorf("image %s: not a docker-archive:PATH[:REF] reference", ref)
	}
	fi, err := a.read(ctx, ref)
	if err != nil {
		return snapshot.Image{}, err
	}
	return snapshot.Image{Ref: ref, Digest: fi.config, Content: fi}, nil
}

// read reads the image ref names.
func (a *Archive) read(ctx context.Context, ref snapshot.Ref) (*fileImage, error) {
	file, tag := ref.Path, ref.Tag
	tf, err := a.tars.open(ctx, file)
	if err != nil {
		return nil, fileError(ref, err)
	}
	mb, err := tf.ReadFile("manifest.json", manifestLimit)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	var m tarball.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("image %s: manifest.json: %w", ref, err)
	}
	e, err := pickRepoTag(m, tag)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	cb, err := tf.ReadFile(e.Config, manifestLimit)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", ref, err)
	}
	d := digest.FromBytes(cb)
	if named := digestOfPath(e.Config); named != "" && named != d {
		return nil, fmt.Errorf("image %s: config %s has digest %s: %w", ref, e.Config, d, snapshot.ErrDigestMismatch)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, fmt.Errorf("image %s: config %s: %w", ref, e.Config, err)
	}
	if err := snapshot.CheckLayerCount(len(e.Layers), len(cf.RootFS.DiffIDs)); err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	ls := make([]snapshot.Layer, len(e.Layers))
	for i, lp := range e.Layers {
		diffID, err := digest.Parse(cf.RootFS.DiffIDs[i].String())
		if err != nil {
			return nil, fmt.Errorf("image %s: config: diffID %q: %w", ref, cf.RootFS.DiffIDs[i], err)
		}
		size, err := tf.Size(lp)
		if err != nil {
			return nil, fmt.Errorf("image %s: layer %d: %w", ref, i+1, err)
		}
		ls[i] = &layer{
			diffID: diffID,
			blob:   digestOfPath(lp), // "" for ID/layer.tar: the importer checks the diffID
			size:   size,
			name:   fmt.Sprintf("layer %s (%s in %s)", diffID, lp, file),
			fetch: func(context.Context) (io.ReadCloser, bool, error) {
				rc, _, err := tf.Open(lp)
				return rc, false, err
			},
		}
	}
	return &fileImage{ref: ref, config: d, raw: cb, layers: ls}, nil
}

// pickRepoTag returns the manifest.json entry tagged tag, or without tag
// the only entry; an error lists the tags there are.
func pickRepoTag(m tarball.Manifest, tag string) (tarball.Descriptor, error) {
	var want name.Tag
	if tag != "" {
		var err error
		if want, err = name.NewTag(tag); err != nil {
			return tarball.Descriptor{}, err
		}
	}
	var tags []string
	for _, e := range m {
		for _, rt := range e.RepoTags {
			tags = append(tags, rt)
			if t, err := name.NewTag(rt); err == nil && tag != "" && t.Name() == want.Name() {
				return e, nil
			}
		}
	}
	if tag == "" && len(m) == 1 {
		return m[0], nil
	}
	have := "no tags"
	if len(tags) > 0 {
		slices.Sort(tags)
		have = "tags " + strings.Join(tags, ", ")
	}
	switch {
	case tag != "":
		return tarball.Descriptor{}, fmt.Errorf("%w: the archive has no image %s, only %s", snapshot.ErrImageNotFound, tag, have)
	case len(m) == 0:
		return tarball.Descriptor{}, fmt.Errorf("%w: the archive holds no image", snapshot.ErrImageNotFound)
	}
	return tarball.Descriptor{}, fmt.Errorf("the archive holds %d images (%s): name one as docker-archive:PATH:REF", len(m), have)
}

// digestOfPath is the digest a path such as blobs/sha256/HEX or HEX.json
// names (or sha256:HEX, as go-containerregistry writes), or "".
func digestOfPath(p string) digest.Digest {
	dir, base := path.Split(path.Clean(p))
	if alg := path.Base(strings.TrimSuffix(dir, "/")); strings.HasSuffix(dir, "/") && alg != "" {
		if d := digest.NewDigestFromEncoded(digest.Algorithm(alg), base); d.Validate() == nil {
			return d
		}
	}
	if d := digest.NewDigestFromEncoded(digest.SHA256, strings.TrimSuffix(base, ".json")); strings.HasSuffix(base, ".json") && d.Validate() == nil {
		return d
	}
	if d, err := digest.Parse(base); err == nil { // go-containerregistry's sha256:HEX
		return d
	}
	return ""
}
