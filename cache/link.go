package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"
)

// The machine link layout lives here, once: machines/NAME/current is a
// symlink whose target is exactly LinkTarget(d) for the tree d it runs.
// Everything that reads a link (activate, verify, gc) parses it with
// ParseLinkTarget, so a damaged link is an error everywhere, never a
// crash or a guess.

// MachineLink is the path of machine name's `current` symlink. The caller
// has validated name.
func (s *Store) MachineLink(name string) string {
	return filepath.Join(s.MachinesDir(), name, "current")
}

// LinkTarget is what machines/NAME/current holds for tree d: a path
// relative to the link, so the store can move as a whole.
func LinkTarget(d digest.Digest) string {
	return "../../trees/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// ParseLinkTarget returns the tree digest a `current` symlink target names.
// Anything but exactly LinkTarget of a valid sha256 digest is an error.
func ParseLinkTarget(target string) (digest.Digest, error) {
	const prefix = "../../trees/sha256/"
	bad := fmt.Errorf("current points at %q, not %s<hex>", target, prefix)
	if len(target) <= len(prefix) || target[:len(prefix)] != prefix {
		return "", bad
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, target[len(prefix):])
	if d.Validate() != nil || LinkTarget(d) != target {
		return "", bad
	}
	return d, nil
}

// ReadMachineLink returns the tree machine name's `current` symlink names.
// The error wraps ErrNotFound if there is no link; a link that is not a
// symlink or not LinkTarget of a digest is another error naming the
// machine. Whether the tree exists is the caller's question.
func (s *Store) ReadMachineLink(name string) (digest.Digest, error) {
	target, err := os.Readlink(s.MachineLink(name))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("machine %s: %w", name, ErrNotFound)
	}
	if err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return "", fmt.Errorf("machine %s: %s is not a symlink", name, s.MachineLink(name))
		}
		return "", fmt.Errorf("machine %s: %w", name, err)
	}
	d, err := ParseLinkTarget(target)
	if err != nil {
		return "", fmt.Errorf("machine %s: %w", name, err)
	}
	return d, nil
}
