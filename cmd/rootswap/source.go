package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/docker"
	"github.com/rootswap/rootswap/snapshot/registry"
)

// The sources an IMAGE argument can name, by its containers-transports(5)
// prefix: docker://… a registry, oci:… an OCI layout, docker-archive:… a
// `docker save` tarball, docker-daemon:… the Docker daemon. A bare
// REPO:TAG names the default source, --source (env ROOTSWAP_SOURCE):
// "daemon" unless set, so units written before registries keep working.
const (
	sourceDaemon   = "daemon"
	sourceRegistry = "registry"
)

func defaultSource() string {
	if v := os.Getenv("ROOTSWAP_SOURCE"); v != "" {
		return v
	}
	return sourceDaemon
}

// checkSource refuses a --source other than the two.
func (g *globals) checkSource() error {
	if g.source != sourceDaemon && g.source != sourceRegistry {
		return usage("--source %q: want %s or %s", g.source, sourceDaemon, sourceRegistry)
	}
	return nil
}

// transports is every transport an IMAGE argument may name, by its
// containers-transports(5) prefix: how the rest of the argument is read
// (once: every later step gets the snapshot.Ref) and which source serves
// it. An argument that starts with none of these prefixes is a bare
// REPO:TAG for the default source.
var transports = []struct {
	name   snapshot.Transport
	prefix string
	parse  func(rest string) (snapshot.Ref, error)
	source func(g *globals, s *cache.Store) (snapshot.Source, error)
}{
	{snapshot.Docker, "docker://", registry.ParseDocker, func(g *globals, s *cache.Store) (snapshot.Source, error) {
		opt := g.registryOptions()
		opt.Refs = s // the store keeps the ref cache
		return registry.New(opt), nil
	}},
	{snapshot.OCI, "oci:", registry.ParseLayout, func(g *globals, _ *cache.Store) (snapshot.Source, error) {
		return registry.NewLayout(g.registryOptions()), nil
	}},
	{snapshot.DockerArchive, "docker-archive:", registry.ParseArchive, func(g *globals, _ *cache.Store) (snapshot.Source, error) {
		return registry.NewArchive(g.registryOptions()), nil
	}},
	{snapshot.DockerDaemon, "docker-daemon:", parseDaemon, func(g *globals, _ *cache.Store) (snapshot.Source, error) {
		c, err := docker.NewClient()
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		return docker.New(c, pullProgress(g.quiet)), nil
	}},
}

// parseDaemon reads what follows docker-daemon: (or a bare argument): a
// tag, name@digest or image ID, which the daemon alone can judge.
func parseDaemon(rest string) (snapshot.Ref, error) {
	return snapshot.Ref{Transport: snapshot.DockerDaemon, Name: rest}, nil
}

func (g *globals) registryOptions() registry.Options {
	return registry.Options{Timeout: g.registryTimeout, Log: g.log}
}

// image parses the IMAGE argument, the one place it is parsed. A bare
// REPO:TAG is the default source's: a registry's becomes docker://REPO:TAG
// (so records, messages and units name the source explicitly), the
// daemon's stays bare. A malformed argument is a usage error, before any
// store or network is touched.
func (g *globals) image(arg string) (snapshot.Ref, error) {
	prefix, rest, parse := "", arg, parseDaemon
	for _, t := range transports {
		if r, ok := strings.CutPrefix(arg, t.prefix); ok {
			prefix, rest, parse = t.prefix, r, t.parse
			break
		}
	}
	if prefix == "" && g.source == sourceRegistry {
		prefix, parse = "docker://", registry.ParseDocker
	}
	if prefix != "" && rest == "" {
		return snapshot.Ref{}, usage("image %q: nothing after %q", arg, prefix)
	}
	ref, err := parse(rest)
	if err != nil {
		return snapshot.Ref{}, usage("image %q: %v", arg, err)
	}
	ref.Bare = prefix == ""
	return ref, nil
}

// fromDaemon reports whether ref comes from the Docker daemon.
func fromDaemon(ref snapshot.Ref) bool { return ref.Transport == snapshot.DockerDaemon }

// newSource is the source that serves ref; s keeps what a registry
// resolved, so a later start needs no network.
func (g *globals) newSource(s *cache.Store, ref snapshot.Ref) (snapshot.Source, error) {
	for _, t := range transports {
		if t.name == ref.Transport {
			return t.source(g, s)
		}
	}
	return nil, fmt.Errorf("image %s: no source for transport %q", ref, ref.Transport)
}

// registryTimeoutDefault is --registry-timeout's default (env
// ROOTSWAP_REGISTRY_TIMEOUT).
func registryTimeoutDefault() time.Duration {
	return envDuration("ROOTSWAP_REGISTRY_TIMEOUT", registry.DefaultTimeout)
}
