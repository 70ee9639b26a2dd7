package registry

import "github.com/google/go-containerregistry/pkg/name"

// mirrors is the mirror configuration; nil means none.
type mirrors struct{}

func loadMirrors(file string) (*mirrors, error) { return nil, nil }

// of returns the mirrors' repositories standing for repo, in order, for
// a by-digest request or a tag request.
func (m *mirrors) of(repo name.Repository, byDigest bool) []name.Repository { return nil }

// nameOptions are the options to parse ref with (insecure registries).
func (m *mirrors) nameOptions(ref string) []name.Option { return nil }
