package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// ErrPlatform marks an image whose config names another platform than
// the one asked for (or, unasked, this host's).
var ErrPlatform = errors.New("image for another platform")

// ParsePlatform reads "os/arch[/variant]" (--platform, ROOTSWAP_PLATFORM);
// "" is this host's: linux/GOARCH.
func ParsePlatform(s string) (ocispec.Platform, error) {
	if s == "" {
		return ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	f := strings.Split(s, "/")
	if len(f) < 2 || len(f) > 3 || f[0] == "" || f[1] == "" || (len(f) == 3 && f[2] == "") {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want OS/ARCH[/VARIANT], such as linux/arm64 or linux/arm/v7", s)
	}
	p := ocispec.Platform{OS: f[0], Architecture: f[1]}
	if len(f) == 3 {
		p.Variant = f[2]
	}
	return p, nil
}

// CheckPlatform refuses image, whose config names platform have, unless
// it is want ("os/arch[/variant]" as --platform gives it; "" for this
// host's). A config that names no OS passes (Docker's own exports of old
// images), and so does any variant when want names none. The error is
// one line naming both platforms and wraps ErrPlatform.
func CheckPlatform(image string, have ocispec.Platform, want string) error {
	w, err := ParsePlatform(want)
	if err != nil {
		return err
	}
	if have.OS == "" || (have.OS == w.OS && have.Architecture == w.Architecture && (w.Variant == "" || have.Variant == "" || have.Variant == w.Variant)) {
		return nil
	}
	if want == "" {
		return fmt.Errorf("image %s is for %s, and this host runs %s: give --platform %s to use it anyway (emulated, where binfmt_misc is set up): %w",
			image, PlatformOf(have), PlatformOf(w), PlatformOf(have), ErrPlatform)
	}
	return fmt.Errorf("image %s is for %s, not %s (--platform): %w", image, PlatformOf(have), PlatformOf(w), ErrPlatform)
}

// PlatformOf spells p as OS/ARCH[/VARIANT]; "" when it names no OS.
func PlatformOf(p ocispec.Platform) string {
	if p.OS == "" && p.Architecture == "" {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ConfigPlatform is the platform a recorded config document names (zero
// when it names none).
func ConfigPlatform(raw []byte) (ocispec.Platform, error) {
	var p ocispec.Platform
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("image config: %w", err)
	}
	return p, nil
}

// checkStoredPlatform refuses the tree the store has for img when the
// config recorded with it names another platform than want, as a new
// import is refused (checkConfig): a tree cached for another platform
// (imported with --platform) serves no other command unasked. A tree
// with no recorded config (import --tar) passes.
func checkStoredPlatform(s *cache.Store, img Image, want string) error {
	var raw []byte
	err := s.View(func(tx *index.Tx) (err error) { raw, err = tx.Config(img.Digest); return err })
	if errors.Is(err, index.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	p, err := ConfigPlatform(raw)
	if err != nil {
		return fmt.Errorf("tree %s: %w", img.Digest, err)
	}
	return CheckPlatform(img.Ref.String(), p, want)
}
