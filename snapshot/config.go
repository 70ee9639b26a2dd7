package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// RecordConfig records img's config with its tree, which the store must
// hold already: what `run` reads at every start (entrypoint, cmd, env,
// user…) and `inspect` shows. A config recorded before is kept: its
// digest is the tree key, so it cannot have changed. The document stored
// is the source's own where it gives one (a registry, an OCI layout, a
// docker-archive), checked against the image digest; the daemon gives
// none, so its description of the image becomes an OCI config document.
func RecordConfig(ctx context.Context, s *cache.Store, img Image) error {
	d := img.Digest
	have := false
	err := s.View(func(tx *index.Tx) error {
		_, err := tx.Config(d)
		have = err == nil
		if errors.Is(err, index.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil || have {
		return err
	}
	cfg, err := img.Config(ctx)
	if err != nil {
		return err
	}
	raw, err := configDocument(d, cfg)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	return s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, raw) })
}

// configDocument is what RecordConfig stores for cfg, the config of
// image d.
func configDocument(d digest.Digest, cfg Config) ([]byte, error) {
	if cfg.Raw == nil {
		return describedDocument(cfg)
	}
	if !d.Algorithm().Available() || d.Algorithm().FromBytes(cfg.Raw) != d {
		return nil, fmt.Errorf("config document: %w (want %s)", ErrDigestMismatch, d)
	}
	return cfg.Raw, nil
}

// mendConfig records the config of an image the store already has a tree
// for, if it lacks one (a tree imported before rootswap recorded
// configs, or a crash between the tree and its config). It never fails
// the import: reading the config may need the network a cached start
// must not depend on; a failure is a warning on log.
func mendConfig(ctx context.Context, s *cache.Store, img Image, opt ImportOptions) {
	if err := RecordConfig(ctx, s, img); err != nil && opt.Log != nil {
		opt.Log.Warn("the image's config is not recorded: run follows the COMMAND given", "image", img.Ref.String(), "digest", img.Digest, "err", err)
	}
}

// checkConfig reads img's config, refuses it when it names another
// platform than want (see CheckPlatform), and returns the document
// RecordConfig would store for it.
func checkConfig(ctx context.Context, img Image, want string) ([]byte, error) {
	cfg, err := img.Config(ctx)
	if err != nil {
		return nil, err
	}
	if err := CheckPlatform(img.Ref.String(), cfg.OCI.Platform, want); err != nil {
		return nil, err
	}
	raw, err := configDocument(img.Digest, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	return raw, nil
}

// describedDocument is the document of a config the source described
// field by field (the daemon): the OCI fields, and under "config" the
// Healthcheck as Docker's own config documents hold it.
func describedDocument(cfg Config) ([]byte, error) {
	raw, err := json.Marshal(cfg.OCI)
	if err != nil || cfg.Healthcheck == nil {
		return raw, err
	}
	var doc map[string]json.RawMessage
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(doc["config"], &c); err != nil || c == nil {
		c = map[string]json.RawMessage{}
	}
	c["Healthcheck"] = cfg.Healthcheck
	if doc["config"], err = json.Marshal(c); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
}
