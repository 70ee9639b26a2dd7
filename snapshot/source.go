package snapshot

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
)

// Source is where images come from: the Docker daemon (snapshot/docker),
// registries and image files (snapshot/registry). It names images and streams their rootfs; validating and storing
// what it streams is this package's job, so every source gets the same
// hostile-input checks.
type Source interface {
	// Pull asks the source to fetch a fresh copy of ref, so that the next
	// Resolve sees it. Progress, if any, is the source's own business.
	Pull(ctx context.Context, ref Ref) error
	// Resolve returns the image digest ref names now: the digest of the
	// image's config (Docker's image ID), whatever the source, so one
	// image is one tree however it arrived. An error wrapping
	// ErrUnreachable means the source could not be asked at all; one
	// wrapping ErrImageNotFound means it has no such image.
	Resolve(ctx context.Context, ref Ref) (digest.Digest, error)
	// Layers returns image d's rootfs as tar streams, lowest first, none
	// of them opened yet. A source that can only export the flattened
	// rootfs (Docker) returns one.
	Layers(ctx context.Context, d digest.Digest) ([]Layer, error)
	// String names the source in messages, as a user calls it ("daemon").
	String() string
}

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
