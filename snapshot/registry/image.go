package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// image is a resolved image as read: what its Content gives.
type image struct {
	config    digest.Digest // the image digest
	rawConfig []byte        // verified against config
	manifest  *v1.Manifest
	diffIDs   []digest.Digest // the config's, lowest first
}

// ociConfig is the image's config as the OCI image spec reads it.
func (img *image) ociConfig(ref snapshot.Ref) (snapshot.Config, error) {
	return parseConfig(ref, img.config, img.rawConfig)
}

// parseConfig reads config document b of image ref, whose digest is d.
func parseConfig(ref snapshot.Ref, d digest.Digest, b []byte) (snapshot.Config, error) {
	c := snapshot.Config{Raw: b}
	if err := json.Unmarshal(b, &c.OCI); err != nil {
		return snapshot.Config{}, fmt.Errorf("image %s: config %s: %w", ref, d, err)
	}
	return c, nil
}

// verify checks content b against the descriptor that named it: digest
// and size.
func verify(b []byte, d v1.Descriptor) error {
	want, err := digest.Parse(d.Digest.String())
	if err != nil {
		return err
	}
	if got := want.Algorithm().FromBytes(b); got != want {
		return fmt.Errorf("content of %s has digest %s: %w", want, got, snapshot.ErrDigestMismatch)
	}
	if d.Size != int64(len(b)) {
		return fmt.Errorf("%s is %d bytes, its descriptor declares %d", want, len(b), d.Size)
	}
	return nil
}

// isIndex reports whether manifest bytes b of media type mt are an index
// (an OCI index or a Docker manifest list); an empty media type, as some
// layouts write, is read from the document.
func isIndex(mt types.MediaType, b []byte) bool {
	if mt == "" {
		var probe struct {
			MediaType types.MediaType `json:"mediaType"`
			Manifests []any           `json:"manifests"`
		}
		_ = json.Unmarshal(b, &probe) // not JSON: not an index
		return probe.MediaType.IsIndex() || (probe.MediaType == "" && probe.Manifests != nil)
	}
	return mt.IsIndex()
}

// pickPlatform returns the index's manifest for platform want, or an
// error listing the platforms the index has.
func pickPlatform(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.Satisfies(want) && m.MediaType.IsImage() {
			return m, nil
		}
		if m.Platform.OS != "unknown" { // attestations
			have = append(have, m.Platform.String())
		}
	}
	slices.Sort(have)
	have = slices.Compact(have)
	if len(have) == 0 {
		return v1.Descriptor{}, fmt.Errorf("index has no manifest for %s (and names no platforms)", want)
	}
	return v1.Descriptor{}, fmt.Errorf("index has no manifest for %s, only for %s", want, strings.Join(have, ", "))
}

// parseImage reads an image manifest and its config, which config fetches
// and verifies against the manifest's config descriptor.
func parseImage(mb []byte, config func(v1.Descriptor) ([]byte, error)) (*image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(mb))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.MediaType.IsSchema1() || m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest: schema version %d (%s) is not supported", m.SchemaVersion, m.MediaType)
	}
	cb, err := config(m.Config)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if err := verify(cb, m.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	img := &image{config: digest.Digest(m.Config.Digest.String()), rawConfig: cb, manifest: m}
	for _, h := range cf.RootFS.DiffIDs {
		d, err := digest.Parse(h.String())
		if err != nil {
			return nil, fmt.Errorf("config %s: diffID %q: %w", m.Config.Digest, h, err)
		}
		img.diffIDs = append(img.diffIDs, d)
	}
	if err := snapshot.CheckLayerCount(len(m.Layers), len(img.diffIDs)); err != nil {
		return nil, err
	}
	for _, l := range m.Layers {
		if _, err := digest.Parse(l.Digest.String()); err != nil {
			return nil, fmt.Errorf("manifest: layer digest %q: %w", l.Digest, err)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("manifest: layer %s has size %d", l.Digest, l.Size)
		}
		if strings.HasSuffix(string(l.MediaType), "+encrypted") {
			return nil, fmt.Errorf("manifest: layer %s is encrypted (%s)", l.Digest, l.MediaType)
		}
	}
	return img, nil
}
