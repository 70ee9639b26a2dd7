package registry

import (
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// ParseDocker reads what follows docker:// in an image argument:
// HOST/REPO:TAG or HOST/REPO@sha256:…. The error says why it is no
// reference; the caller names the argument.
func ParseDocker(rest string) (snapshot.Ref, error) {
	if _, err := name.ParseReference(rest); err != nil {
		return snapshot.Ref{}, err
	}
	return snapshot.Ref{Transport: snapshot.Docker, Name: rest}, nil
}

// ParseLayout reads what follows oci: in an image argument, PATH[:TAG].
// PATH may hold ':' itself; a TAG holds no '/'.
func ParseLayout(rest string) (snapshot.Ref, error) {
	return splitTag(snapshot.OCI, rest), nil
}

// ParseOCIArchive reads what follows oci-archive: in an image argument,
// PATH[:TAG], as ParseLayout does.
func ParseOCIArchive(rest string) (snapshot.Ref, error) {
	return splitTag(snapshot.OCIArchive, rest), nil
}

func splitTag(t snapshot.Transport, rest string) snapshot.Ref {
	r := snapshot.Ref{Transport: t, Path: rest}
	if i := strings.LastIndexByte(rest, ':'); i > 0 && !strings.Contains(rest[i+1:], "/") {
		r.Path, r.Tag = rest[:i], rest[i+1:]
	}
	return r
}

// ParseArchive reads what follows docker-archive: in an image argument,
// PATH[:REF]. REF may hold ':' (REPO:TAG) and so may PATH, so PATH is
// the shortest prefix that is a regular file, or all of it.
func ParseArchive(rest string) (snapshot.Ref, error) {
	r := snapshot.Ref{Transport: snapshot.DockerArchive, Path: rest}
	for i := 0; i < len(rest); i++ {
		if rest[i] != ':' {
			continue
		}
		if fi, err := os.Stat(rest[:i]); err == nil && fi.Mode().IsRegular() {
			r.Path, r.Tag = rest[:i], rest[i+1:]
			break
		}
	}
	return r, nil
}

// RefCache is what the registry source reads of the ref cache: what refs
// resolved to in earlier processes (cache.Store keeps it in the index,
// and the importer writes it once an image is stored). LookupRef's ok is
// false (and err nil) when ref has no record.
type RefCache interface {
	LookupRef(ref string) (d, manifest digest.Digest, ok bool, err error)
}
