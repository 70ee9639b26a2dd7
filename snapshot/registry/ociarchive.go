package registry

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

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
	images   images
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

// Pull does nothing: an archive is read where it is.
func (a *OCIArchive) Pull(ctx context.Context, ref string) error {
	_, _, err := a.parse(ref)
	return err
}

func (a *OCIArchive) parse(ref string) (file, tag string, err error) {
	if a.err != nil {
		return "", "", a.err
	}
	t, rest, ok := Transport(ref)
	if !ok || t != "oci-archive" || rest == "" {
		return "", "", fmt.Errorf("image %s: not an oci-archive:PATH[:TAG] reference", ref)
	}
	// PATH may hold ':' itself; a TAG holds no '/'.
	if i := strings.LastIndexByte(rest, ':'); i > 0 && !strings.Contains(rest[i+1:], "/") {
		return rest[:i], rest[i+1:], nil
	}
	return rest, "", nil
}

// Resolve reads the archive's index.json and returns the image digest of
// the manifest tagged TAG, or without TAG of its only manifest, as
// Layout.Resolve does for a directory.
func (a *OCIArchive) Resolve(ctx context.Context, ref string) (digest.Digest, error) {
	file, tag, err := a.parse(ref)
	if err != nil {
		return "", err
	}
	tf, err := a.tars.open(file)
	if err != nil {
		return "", fileError(ref, err)
	}
	d, ls, err := resolveLayout(tf, file, tag, a.platform)
	if err != nil {
		return "", fileError(ref, err)
	}
	a.images.put(d, ls)
	return d, nil
}

// Layers returns the layers of image d, which Resolve must have returned;
// each Open reads its blob from the archive and verifies it.
func (a *OCIArchive) Layers(ctx context.Context, d digest.Digest) ([]snapshot.Layer, error) {
	return a.images.get(a.String(), d)
}
