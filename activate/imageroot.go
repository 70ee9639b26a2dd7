package activate

import (
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
)

// imageRoot is what planImage reads tree d's own files from (its
// /etc/passwd and /etc/group) before anything is mounted: a plain tree's
// directory tree, or a stack's layer directories as overlayfs shows them
// (cache.Store.StackFS): FileSettings reads it without mounting (run
// reads a stack from its mount). The caller calls done when it has read.
func imageRoot(s *cache.Store, tree string, d digest.Digest) (root fs.FS, done func(), err error) {
	if _, _, ok, err := s.StackOf(d); err == nil && ok {
		sf, err := s.StackFS(d)
		return sf, func() {}, err
	}
	r, err := os.OpenRoot(tree)
	if err != nil {
		return nil, nil, err
	}
	return r.FS(), func() { r.Close() }, nil
}
