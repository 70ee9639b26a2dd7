package registry

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/rootswap/rootswap/index"
)

// Transport splits an image argument into its containers-transports(5)
// transport name ("docker", "oci", "oci-archive", "docker-archive",
// "docker-daemon") and the rest. A bare REPO:TAG has none: ok is false, and it keeps its old
// meaning (the Docker daemon). Windows-style or URL-like inputs that are
// not one of these four are not ours either.
func Transport(image string) (name, rest string, ok bool) {
	if r, ok := strings.CutPrefix(image, "docker://"); ok {
		return "docker", r, true
	}
	for _, t := range []string{"oci", "oci-archive", "docker-archive", "docker-daemon"} {
		if r, ok := strings.CutPrefix(image, t+":"); ok {
			return t, r, true
		}
	}
	return "", "", false
}

// RefCache remembers what refs resolved to (index.Ref records) between
// processes. LookupRef's
// bool is false (and the error nil) when ref has no record.
type RefCache interface {
	LookupRef(ref string) (index.Ref, bool, error)
	RecordRef(index.Ref) error
}

// CheckRef refuses an image argument whose transport this package knows
// but whose rest cannot be a reference of it: an empty or unparsable
// docker:// name, an oci: or docker-archive: without PATH, a
// docker-daemon: without REF. It looks at nothing but the string, so a
// command can refuse a typo before it touches a store or the network.
func CheckRef(image string) error {
	t, rest, ok := Transport(image)
	switch {
	case !ok:
		return checkBare(image)
	case rest == "":
		return fmt.Errorf("image %q: nothing after %q", image, strings.TrimSuffix(image, rest))
	case t == "docker":
		if _, err := name.ParseReference(rest); err != nil {
			return fmt.Errorf("image %q: %w", image, err)
		}
	}
	return nil
}

// Transports lists the transport prefixes Transport knows, for messages.
const Transports = "docker://, oci:, oci-archive:, docker-archive:, docker-daemon:"

// checkBare refuses an argument with no transport of ours that is
// shaped like one and is no Docker reference either, so that a mistyped
// or unsupported transport never reaches the Docker daemon as a name:
// WORD://… and WORD:/… (a tag or a port never starts with "/"), and
// containers-storage:…, podman's store, which would parse as a
// reference. WORD:TAG (app:1, docker:dind) stays a daemon reference.
func checkBare(image string) error {
	word, rest, ok := strings.Cut(image, ":")
	if !ok || !transportWord(word) || !strings.HasPrefix(rest, "/") && word != "containers-storage" {
		return nil
	}
	return fmt.Errorf("image %q: unknown transport %q: rootswap reads %s (a bare REPO:TAG names the --source)", image, word+":", Transports)
}

// transportWord reports whether w could name a transport: a letter, then
// letters, digits and "-+." (URL scheme characters).
func transportWord(w string) bool {
	for i, c := range w {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '+' || c == '.'):
		default:
			return false
		}
	}
	return w != ""
}
