package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/docker"
	"github.com/rootswap/rootswap/snapshot/registry"
)

// The sources an IMAGE argument can name, by its containers-transports(5)
// prefix: docker://… a registry, oci:… an OCI layout, oci-archive:… a tar
// of one, docker-archive:… a `docker save` tarball, docker-daemon:… the
// Docker daemon. A bare
// REPO:TAG names the default source, --source (env ROOTSWAP_SOURCE):
// "daemon" unless set, so units written before registries keep working.
const (
	sourceDaemon   = "daemon"
	sourceRegistry = "registry"
)

// checkSource refuses a --source other than the two.
func (g *globals) checkSource() error {
	if g.source != sourceDaemon && g.source != sourceRegistry {
		return usage("%s: want %s or %s", g.given("source", g.source), sourceDaemon, sourceRegistry)
	}
	return nil
}

// image is the IMAGE argument as every later step sees it: a bare
// REPO:TAG gets the default source's prefix when that is the registry, so
// records, messages and units name the source explicitly.
// A malformed one is a usage error, before any store or network is
// touched.
func (g *globals) image(arg string) (string, error) {
	if _, _, ok := registry.Transport(arg); !ok && g.source == sourceRegistry {
		arg = "docker://" + arg
	}
	if err := registry.CheckRef(arg); err != nil {
		return "", usage("%v", err)
	}
	return arg, nil
}

// fromDaemon reports whether image (as g.image made it) comes from the
// Docker daemon.
func fromDaemon(image string) bool {
	t, _, ok := registry.Transport(image)
	return !ok || t == "docker-daemon"
}

// newSource is the source image (as g.image made it) names; s keeps what
// a registry resolved, so a later start needs no network.
func (g *globals) newSource(s *cache.Store, image string) (snapshot.Source, error) {
	t, _, ok := registry.Transport(image)
	opt := registry.Options{Timeout: g.registryTimeout, MirrorsFile: g.registriesConf, Log: g.log, TempDir: s.TmpDir(), Platform: g.platform}
	switch {
	case !ok || t == "docker-daemon":
		c, err := docker.NewClient()
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		return docker.New(c, g.pullProgress()), nil
	case t == "docker":
		opt.Refs = refCache{s}
		return registry.New(opt), nil
	case t == "oci":
		return registry.NewLayout(opt), nil
	case t == "oci-archive":
		return registry.NewOCIArchive(opt), nil
	default: // docker-archive
		return registry.NewArchive(opt), nil
	}
}

// closeSource releases what src holds open (an archive's decompressed
// copy), if anything.
func closeSource(src snapshot.Source) {
	if c, ok := src.(io.Closer); ok {
		c.Close()
	}
}

// refCache keeps a registry's resolved refs in the store's index.
type refCache struct{ s *cache.Store }

func (c refCache) LookupRef(ref string) (r index.Ref, ok bool, err error) {
	err = c.s.View(func(tx *index.Tx) error {
		r, err = tx.Ref(ref)
		ok = err == nil
		return err
	})
	if errors.Is(err, cache.ErrNotFound) {
		err = nil
	}
	return r, ok, err
}

func (c refCache) RecordRef(r index.Ref) error {
	return c.s.Update(func(tx *index.Tx) error { return tx.PutRef(r) })
}
