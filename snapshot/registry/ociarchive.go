package registry

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/rootswap/rootswap/snapshot"
)

// OCIArchive is a tar of an OCI image layout (what `podman save --format
// oci-archive` and `skopeo copy … oci-archive:` write) as a
// snapshot.Source, for oci-archive:PATH[:TAG] refs; TAG is as for oci:.
// The tar is never unpacked: its headers are indexed once and each blob
// is read in place (a compressed tar is decompressed once, bounded, into
// an unlinked temporary file), so no name in it can reach the
// filesystem. Pull does nothing; Resolve reads the file each time it
// changed. It is safe for concurrent use; Close releases the files
// Resolve opened.
type OCIArchive struct {
	platform v1.Platform
	err      error
	tars     tarCache
}

var _ snapshot.Source = (*OCIArchive)(nil)

// NewOCIArchive returns an oci-archive source; of opt Platform and
// TempDir count.
func NewOCIArchive(opt Options) *OCIArchive {
	a := &OCIArchive{tars: tarCache{tmpDir: opt.TempDir}}
	a.platform, a.err = parsePlatform(opt.Platform)
	return a
}

// String is what a user calls this source in messages.
func (a *OCIArchive) String() string { return "oci-archive" }

// Close releases the archives Resolve opened; the streams of their
// layers must be closed first.
func (a *OCIArchive) Close() error { return a.tars.Close() }

// Pull is Resolve: an archive is read where it is.
func (a *OCIArchive) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	return a.Resolve(ctx, ref)
}

// Resolve reads the archive's index.json and returns the image of the
// manifest tagged TAG, or without TAG of its only manifest, as
// Layout.Resolve does for a directory.
func (a *OCIArchive) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if a.err != nil {
		return snapshot.Image{}, a.err
	}
	if ref.Transport != snapshot.OCIArchive || ref.Path == "" {
		return snapshot.Image{}, fmt.Errorf("image %s: not an oci-archive:PATH[:TAG] reference", ref)
	}
	tf, err := a.tars.open(ctx, ref.Path)
	if err != nil {
		return snapshot.Image{}, fileError(ref, err)
	}
	fi, top, err := resolveLayout(tf, ref.Path, ref.Tag, a.platform)
	if err != nil {
		return snapshot.Image{}, fileError(ref, err)
	}
	fi.ref = ref
	return snapshot.Image{Ref: ref, Digest: fi.config, Manifest: top, Content: fi}, nil
}
