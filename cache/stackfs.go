package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// StackFS reads stack d's files as overlayfs shows them, without a mount:
// a name resolves in the topmost layer directory that holds it, unless a
// whiteout or an opaque directory above it hides it, or a layer above
// holds something else than a directory on its way. It is for small
// reads of an image's own files (its /etc/passwd) before a run mounts the
// stack: it opens regular files only and follows no symlink, in the name
// or at its end (such a name is not found, or not a regular file), so an
// image cannot make it read a host file. Its Open takes the store's
// relative, slash-separated names (fs.ValidPath). A tree that is no stack
// is an error wrapping ErrInvalid.
func (s *Store) StackFS(d digest.Digest) (fs.FS, error) {
	var t index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { t, err = tx.Tree(d); return err }); err != nil {
		return nil, err
	}
	if len(t.Stack) == 0 {
		return nil, fmt.Errorf("tree %s: not a stack: %w", d, ErrInvalid)
	}
	sf := stackFS{}
	for i := len(t.Stack) - 1; i >= 0; i-- {
		c := t.Stack[i]
		if !ValidDigest(c) {
			return nil, fmt.Errorf("tree %s: layer %d: chain ID %q: %w", d, i, c, ErrInvalid)
		}
		sf.layers = append(sf.layers, s.LayerDirPath(c))
	}
	return sf, nil
}

// stackFS is a stack's layer directories, topmost first.
type stackFS struct{ layers []string }

func (sf stackFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	p, err := sf.find(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

// find returns the path of the regular file name in the layer that shows
// it.
func (sf stackFS) find(name string) (string, error) {
	parts := strings.Split(name, "/")
	for _, dir := range sf.layers {
		hiddenBelow := false // an opaque directory on the way hides the lower layers
		p := ""
		for j, c := range parts {
			p = path.Join(p, c)
			st, err := fsys.Lstat(filepath.Join(dir, p))
			if errors.Is(err, syscall.ENOENT) {
				break
			}
			if err != nil {
				return "", err
			}
			switch typ := st.Mode & syscall.S_IFMT; {
			case typ == syscall.S_IFCHR && st.Rdev == 0:
				return "", fs.ErrNotExist // a whiteout
			case j == len(parts)-1 && typ == syscall.S_IFREG:
				return filepath.Join(dir, p), nil
			case j == len(parts)-1:
				return "", fmt.Errorf("not a regular file: %w", fs.ErrInvalid)
			case typ != syscall.S_IFDIR:
				return "", fs.ErrNotExist // it hides what lower layers hold there
			}
			if opaque(filepath.Join(dir, p)) {
				hiddenBelow = true
			}
		}
		if hiddenBelow {
			return "", fs.ErrNotExist
		}
	}
	return "", fs.ErrNotExist
}
