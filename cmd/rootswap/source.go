package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/rootswap/rootswap/cache"
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

// transports is every transport an IMAGE argument may name, by its
// containers-transports(5) prefix: how the rest of the argument is read
// (once: every later step gets the snapshot.Ref) and which source serves
// it. An argument that starts with none of these prefixes is a bare
// REPO:TAG for the default source, unless it is shaped like a transport
// (checkBare).
var transports = []struct {
	name   snapshot.Transport
	prefix string
	parse  func(rest string) (snapshot.Ref, error)
	source func(g *globals, s *cache.Store) (snapshot.Source, error)
}{
	{snapshot.Docker, "docker://", registry.ParseDocker, func(g *globals, s *cache.Store) (snapshot.Source, error) {
		opt := g.registryOptions(s)
		opt.Refs = s // the store keeps the ref cache
		return registry.New(opt), nil
	}},
	{snapshot.OCI, "oci:", registry.ParseLayout, func(g *globals, s *cache.Store) (snapshot.Source, error) {
		return registry.NewLayout(g.registryOptions(s)), nil
	}},
	{snapshot.OCIArchive, "oci-archive:", registry.ParseOCIArchive, func(g *globals, s *cache.Store) (snapshot.Source, error) {
		return registry.NewOCIArchive(g.registryOptions(s)), nil
	}},
	{snapshot.DockerArchive, "docker-archive:", registry.ParseArchive, func(g *globals, s *cache.Store) (snapshot.Source, error) {
		return registry.NewArchive(g.registryOptions(s)), nil
	}},
	{snapshot.DockerDaemon, "docker-daemon:", parseDaemon, func(g *globals, _ *cache.Store) (snapshot.Source, error) {
		c, err := docker.NewClient()
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		return docker.New(c, g.pullProgress()), nil
	}},
}

// parseDaemon reads what follows docker-daemon: (or a bare argument): a
// tag, name@digest or image ID, which the daemon alone can judge.
func parseDaemon(rest string) (snapshot.Ref, error) {
	return snapshot.Ref{Transport: snapshot.DockerDaemon, Name: rest}, nil
}

func (g *globals) registryOptions(s *cache.Store) registry.Options {
	return registry.Options{Timeout: g.registryTimeout, MirrorsFile: g.registriesConf, Log: g.log, TempDir: s.TmpDir(), Platform: g.platform}
}

// prefixes lists the transports' prefixes, for messages.
func prefixes() string {
	var ps []string
	for _, t := range transports {
		ps = append(ps, t.prefix)
	}
	return strings.Join(ps, ", ")
}

// image parses the IMAGE argument, the one place it is parsed. A bare
// REPO:TAG is the default source's: a registry's becomes docker://REPO:TAG
// (so records, messages and units name the source explicitly), the
// daemon's stays bare. A malformed argument is a usage error, before any
// store or network is touched.
func (g *globals) image(arg string) (snapshot.Ref, error) {
	return parseImage(arg, g.source == sourceRegistry)
}

// recordedImage parses a reference as rootswap recorded it (Ref.String,
// in a machine's record): a bare one is the daemon's, whatever --source
// says now.
func recordedImage(s string) (snapshot.Ref, error) { return parseImage(s, false) }

// parseImage parses arg; a bare one is a registry's if bareIsRegistry.
func parseImage(arg string, bareIsRegistry bool) (snapshot.Ref, error) {
	prefix, rest, parse := "", arg, parseDaemon
	for _, t := range transports {
		if r, ok := strings.CutPrefix(arg, t.prefix); ok {
			prefix, rest, parse = t.prefix, r, t.parse
			break
		}
	}
	if prefix == "" {
		if err := checkBare(arg); err != nil {
			return snapshot.Ref{}, usage("%v", err)
		}
		if bareIsRegistry {
			prefix, parse = "docker://", registry.ParseDocker
		}
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
	return fmt.Errorf("image %q: unknown transport %q: rootswap reads %s (a bare REPO:TAG names the --source)", image, word+":", prefixes())
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

// fromDaemon reports whether ref comes from the Docker daemon.
func fromDaemon(ref snapshot.Ref) bool { return ref.Transport == snapshot.DockerDaemon }

// newSource is the source that serves ref; s keeps what a registry
// resolved, so a later start needs no network, and takes an archive's
// decompressed copy. The caller closes it with closeSource.
func (g *globals) newSource(s *cache.Store, ref snapshot.Ref) (snapshot.Source, error) {
	for _, t := range transports {
		if t.name == ref.Transport {
			return t.source(g, s)
		}
	}
	return nil, fmt.Errorf("image %s: no source for transport %q", ref, ref.Transport)
}

// closeSource releases what src holds open (an archive's decompressed
// copy), if anything.
func closeSource(src snapshot.Source) {
	if c, ok := src.(io.Closer); ok {
		c.Close()
	}
}
