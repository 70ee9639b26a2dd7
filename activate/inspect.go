package activate

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
)

// ConfigSummary is what an image's config says about running it, as
// `images --json` and `inspect` show it (the fields of `docker image
// inspect`'s Config that rootswap reads or reports). Lists are [] when
// empty.
type ConfigSummary struct {
	Platform     string            `json:"platform"` // OS/ARCH[/VARIANT], as the config names it
	Entrypoint   []string          `json:"entrypoint"`
	Cmd          []string          `json:"cmd"`
	Env          []string          `json:"env"`
	WorkingDir   string            `json:"working_dir"`
	User         string            `json:"user"`
	StopSignal   string            `json:"stop_signal"`
	ExposedPorts []string          `json:"exposed_ports"` // not used: the host's network
	Volumes      []string          `json:"volumes"`       // not used: --bind
	Labels       map[string]string `json:"labels"`
	Healthcheck  *Healthcheck      `json:"healthcheck,omitempty"` // Docker's; not used
}

// Healthcheck is Docker's HEALTHCHECK as a config records it.
type Healthcheck struct {
	Test     []string      `json:"Test,omitempty"`
	Interval time.Duration `json:"Interval,omitempty"`
	Timeout  time.Duration `json:"Timeout,omitempty"`
	Retries  int           `json:"Retries,omitempty"`
}

// dockerConfig is the part of a Docker config the OCI spec leaves out.
type dockerConfig struct {
	Config struct {
		Healthcheck *Healthcheck `json:"Healthcheck"`
	} `json:"config"`
}

// ParseConfig reads a recorded config document.
func ParseConfig(raw []byte) (ocispec.Image, error) {
	var img ocispec.Image
	if err := json.Unmarshal(raw, &img); err != nil {
		return img, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// Summary is raw's ConfigSummary.
func Summary(raw []byte) (ConfigSummary, error) {
	img, err := ParseConfig(raw)
	if err != nil {
		return ConfigSummary{}, err
	}
	var dc dockerConfig
	json.Unmarshal(raw, &dc) // the OCI parse succeeded: this cannot fail on syntax
	c := img.Config
	keys := func(m map[string]struct{}) []string {
		out := []string{}
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	orEmpty := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	labels := c.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return ConfigSummary{Platform: snapshot.PlatformOf(img.Platform), Entrypoint: orEmpty(c.Entrypoint), Cmd: orEmpty(c.Cmd),
		Env: orEmpty(c.Env), WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal,
		ExposedPorts: keys(c.ExposedPorts), Volumes: keys(c.Volumes), Labels: labels, Healthcheck: dc.Config.Healthcheck}, nil
}

// imageConfig is the config recorded with tree d, or nil when the store
// has none (a tree imported from a bare tar stream, or before rootswap
// recorded configs: the next prepare records it). A damaged index gives
// nil and no warning here: the link, not the index, says what runs, and
// run's one warning about the damage (recordStart) says what is missing.
func imageConfig(s *cache.Store, d digest.Digest) (*ocispec.ImageConfig, string, error) {
	var raw []byte
	err := s.View(func(tx *index.Tx) (err error) { raw, err = tx.Config(d); return err })
	switch {
	case errors.Is(err, index.ErrNotFound):
		return nil, "", nil
	case errors.Is(err, index.ErrDamaged):
		return nil, "", nil
	case err != nil:
		return nil, "", err
	}
	img, err := ParseConfig(raw)
	if err != nil {
		return nil, "", fmt.Errorf("tree %s: %w", d, err)
	}
	return &img.Config, "", nil
}

// ImageInfo is one stored image as `inspect` shows it: the tree, the
// references and manifests that named it, its layers and its config.
type ImageInfo struct {
	Digest         digest.Digest   `json:"digest"` // the config digest: the tree key, Docker's image ID
	Refs           []string        `json:"refs"`
	Manifests      []digest.Digest `json:"manifests"` // registry manifest digests its refs resolved through
	Imported       time.Time       `json:"imported"`
	Files          int64           `json:"files"`
	Bytes          int64           `json:"bytes"`
	Layers         []LayerInfo     `json:"layers"`                    // lowest first; [] for a daemon export or a tar
	Config         *ConfigSummary  `json:"config,omitempty"`          // absent when none is recorded (import --tar)
	ConfigVerified bool            `json:"config_verified"`           // the recorded document's sha256 is Digest
	Document       json.RawMessage `json:"config_document,omitempty"` // the config as recorded
}

// LayerInfo is one layer of an image: its diffID, the compressed blobs
// seen to hold it, and while the store keeps its record what it holds.
type LayerInfo struct {
	DiffID digest.Digest   `json:"diff_id"`
	Blobs  []digest.Digest `json:"blobs"`
	Files  int64           `json:"files"`
	Bytes  int64           `json:"bytes"`
	Cached bool            `json:"cached"`
}

// Inspect returns what the store knows of image d. It reads the index
// only: no source is asked.
func Inspect(s *cache.Store, d digest.Digest) (ImageInfo, error) {
	info := ImageInfo{Digest: d, Refs: []string{}, Manifests: []digest.Digest{}, Layers: []LayerInfo{}}
	err := s.View(func(tx *index.Tx) error {
		t, err := tx.Tree(d)
		if err != nil {
			return err
		}
		info.Imported, info.Files, info.Bytes = t.Created, t.Files, t.Bytes
		info.Refs = append(info.Refs, t.Refs...)
		for _, id := range t.Layers {
			l, err := tx.Layer(id)
			li := LayerInfo{DiffID: id, Blobs: []digest.Digest{}}
			if err == nil {
				li.Blobs, li.Files, li.Bytes, li.Cached = append(li.Blobs, l.Blobs...), l.Files, l.Bytes, true
			}
			info.Layers = append(info.Layers, li)
		}
		refs, err := tx.Refs()
		if err != nil {
			return err
		}
		for _, r := range refs {
			if r.Digest != d {
				continue
			}
			if !slices.Contains(info.Refs, r.Ref) {
				info.Refs = append(info.Refs, r.Ref)
			}
			if r.Manifest != "" && !slices.Contains(info.Manifests, r.Manifest) {
				info.Manifests = append(info.Manifests, r.Manifest)
			}
		}
		raw, err := tx.Config(d)
		if errors.Is(err, index.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		sum, err := Summary(raw)
		if err != nil {
			return fmt.Errorf("tree %s: %w", d, err)
		}
		info.Config, info.Document = &sum, raw
		info.ConfigVerified = d.Algorithm().Available() && d.Algorithm().FromBytes(raw) == d
		return nil
	})
	return info, err
}
