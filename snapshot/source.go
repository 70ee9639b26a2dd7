package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is where images come from: the Docker daemon (snapshot/docker),
// registries and image files (snapshot/registry). It resolves references
// to images and streams their rootfs; validating and storing what it
// streams is this package's job, so every source gets the same
// hostile-input checks.
type Source interface {
	// Resolve returns the image ref names. A source that keeps records
	// of what refs resolved to (a registry's ref cache) answers from the
	// record, without being asked: Pull is what asks again. An error
	// wrapping ErrUnreachable means the source could not be asked at
	// all; one wrapping ErrImageNotFound means it has no such image.
	Resolve(ctx context.Context, ref Ref) (Image, error)
	// Pull asks the source afresh what ref names (the daemon pulls it; a
	// registry is asked for the tag's manifest) and returns that image,
	// with Resolve's errors. Progress, if any, is the source's own
	// business.
	Pull(ctx context.Context, ref Ref) (Image, error)
	// String names the source in messages, as a user calls it ("daemon").
	String() string
}

// Image is one image as a source resolved a reference to it: the
// digests that name it, and its Content. It holds everything a later
// step needs of the image, so nothing depends on what an earlier call of
// the source left behind.
type Image struct {
	Ref Ref // the reference it was resolved from
	// Digest is the digest of the image's config (Docker's image ID),
	// whatever the source, so one image is one tree however it arrived:
	// the store key.
	Digest digest.Digest
	// Manifest is the digest of the manifest Ref named: an index's (a
	// manifest list's) for a multi-platform tag, else the image
	// manifest's; for a layout, the digest its index.json lists. It is
	// "" where there is none: the daemon, a docker-archive.
	Manifest digest.Digest
	// Record is set by a source that keeps records of what refs resolved
	// to (a registry's ref cache) when it resolved Ref afresh rather than
	// from its record: once the image is accepted and its tree stored,
	// RecordRef records Ref at Digest and Manifest. Never sooner, so that
	// an image refused on the way in never becomes what Ref names offline.
	Record bool
	// Content reads the image's config and layers from the source, when
	// asked: a registry image resolved from a record reads its manifest
	// only then. Nil only in the zero Image.
	Content Content
}

// Content is what a source can read of an image it resolved.
type Content interface {
	// Config returns the image's config.
	Config(ctx context.Context) (Config, error)
	// Layers returns the image's rootfs as tar streams, lowest first,
	// none of them opened yet. A source that can only export the
	// flattened rootfs (Docker) returns one.
	Layers(ctx context.Context) ([]Layer, error)
}

// Config is an image's config: what it runs and how (entrypoint, cmd,
// env, user, working directory, stop signal), for which platform, and
// its layers' diffIDs.
type Config struct {
	// Raw is the config document as the source holds it, whose digest is
	// the image digest; nil where the source has none to give (the
	// daemon describes its images field by field).
	Raw []byte
	// OCI is Raw as the OCI image spec reads it; for the daemon, what
	// ImageInspect says of the same fields.
	OCI ocispec.Image
	// Healthcheck is the daemon's HEALTHCHECK, in Docker's JSON form
	// (Test, Interval…), which the OCI spec has no field for; nil where
	// Raw holds the document, and for an image without one.
	Healthcheck json.RawMessage
}

// Config returns im's config from its source.
func (im Image) Config(ctx context.Context) (Config, error) {
	if im.Content == nil {
		return Config{}, fmt.Errorf("image %s: %w", im.Ref, errNoContent)
	}
	return im.Content.Config(ctx)
}

// Layers returns im's layers from its source (see Content).
func (im Image) Layers(ctx context.Context) ([]Layer, error) {
	if im.Content == nil {
		return nil, fmt.Errorf("image %s: %w", im.Ref, errNoContent)
	}
	return im.Content.Layers(ctx)
}

var errNoContent = errors.New("resolved by no source")

// Layer is one rootfs tar stream of an image.
type Layer interface {
	// Open starts the uncompressed tar stream. The caller closes it on
	// every path; closing releases whatever the source holds for it
	// (Docker's export container), even when ctx is cancelled. A source
	// that fetches a blob (Blob is not "") checks the blob's digest once
	// it has read the blob to its end: on a mismatch, Read returns an
	// error naming the blob instead of io.EOF.
	Open(ctx context.Context) (io.ReadCloser, error)
	// DiffID is the digest of the uncompressed stream, as the image's
	// config lists it; the importer checks it after reading the stream to
	// its end, and keys the layer's record by it. It is "" for a
	// flattened export, which no config describes and no record keeps.
	DiffID() digest.Digest
	// Blob is the digest of the (compressed) blob the source fetches for
	// the layer, as the image's manifest lists it; "" if there is none.
	Blob() digest.Digest
}

// Conditions callers of a Source branch on; every source wraps these.
var (
	ErrImageNotFound = errors.New("image not found")
	ErrUnreachable   = errors.New("image source unreachable")
	// ErrDigestMismatch: content is not what its digest says (a layer's
	// diffID, a blob's digest). Sources wrap it too.
	ErrDigestMismatch = errors.New("digest mismatch")
)
