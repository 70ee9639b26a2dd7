package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/name"
)

// DefaultMirrorsFile is where mirrors are configured unless
// Options.MirrorsFile or $ROOTSWAP_REGISTRIES_CONF says otherwise.
const DefaultMirrorsFile = "/etc/rootswap/registries.conf"

// mirrorsConf is the subset of containers-registries.conf(5) this
// package reads; other keys are ignored.
type mirrorsConf struct {
	Registry []struct {
		Prefix   string
		Location string
		Insecure bool
		Blocked  bool
		Mirror   []struct {
			Location       string
			Insecure       bool
			PullFromMirror string `toml:"pull-from-mirror"`
		}
	}
}

// mirrors is the mirror configuration; a nil *mirrors has none.
type mirrors struct {
	regs []registryConf
}

type registryConf struct {
	prefix, location  string
	insecure, blocked bool
	mirrors           []mirrorConf
}

type mirrorConf struct {
	location     string
	insecure     bool
	tags, digest bool // which requests it serves
}

// loadMirrors reads the mirrors file: file, else $ROOTSWAP_REGISTRIES_CONF,
// else DefaultMirrorsFile. A missing file means no mirrors.
func loadMirrors(file string) (*mirrors, error) {
	if file == "" {
		file = os.Getenv("ROOTSWAP_REGISTRIES_CONF")
	}
	if file == "" {
		file = DefaultMirrorsFile
	}
	var c mirrorsConf
	if _, err := toml.DecodeFile(file, &c); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("registries conf %s: %w", file, err)
	}
	m := &mirrors{}
	for _, r := range c.Registry {
		rc := registryConf{prefix: r.Prefix, location: r.Location, insecure: r.Insecure, blocked: r.Blocked}
		if rc.prefix == "" {
			rc.prefix = rc.location
		}
		if rc.location == "" {
			rc.location = rc.prefix
		}
		if rc.prefix == "" {
			return nil, fmt.Errorf("registries conf %s: a [[registry]] has neither prefix nor location", file)
		}
		if strings.ContainsAny(rc.prefix, "*@") || strings.Contains(rc.prefix, "://") {
			return nil, fmt.Errorf("registries conf %s: prefix %q: wildcards, digests and schemes are not supported", file, rc.prefix)
		}
		for _, mc := range r.Mirror {
			if mc.Location == "" {
				return nil, fmt.Errorf("registries conf %s: a mirror of %s has no location", file, rc.prefix)
			}
			mm := mirrorConf{location: mc.Location, insecure: mc.Insecure}
			switch mc.PullFromMirror {
			case "", "all":
				mm.tags, mm.digest = true, true
			case "digest-only":
				mm.digest = true
			case "tag-only":
				mm.tags = true
			default:
				return nil, fmt.Errorf("registries conf %s: mirror %s: pull-from-mirror %q is not all, digest-only or tag-only", file, mc.Location, mc.PullFromMirror)
			}
			rc.mirrors = append(rc.mirrors, mm)
		}
		m.regs = append(m.regs, rc)
	}
	return m, nil
}

// repoString is repo as registries.conf prefixes spell it: docker.io, not
// index.docker.io.
func repoString(repo name.Repository) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr()
}

// match returns the most specific [[registry]] whose prefix covers repo
// (the whole string or up to a '/'), and the rest of repo after it. A
// repository already redirected matches its entry by location.
func (m *mirrors) match(s string) (*registryConf, string) {
	if m == nil {
		return nil, ""
	}
	var best *registryConf
	var rest string
	n := -1
	for i := range m.regs {
		r := &m.regs[i]
		for _, p := range []string{r.prefix, r.location} {
			if (s == p || strings.HasPrefix(s, p+"/")) && len(p) > n {
				best, rest, n = r, s[len(p):], len(p)
			}
		}
	}
	return best, rest
}

// upstream is r as the configuration redirects it (location, insecure),
// or an error if its registry is blocked.
func (m *mirrors) upstream(r name.Reference) (name.Reference, error) {
	rc, rest := m.match(repoString(r.Context()))
	if rc == nil {
		return r, nil
	}
	if rc.blocked {
		return nil, fmt.Errorf("registry %s is blocked by the registries conf", rc.prefix)
	}
	if rc.location == rc.prefix && !rc.insecure {
		return r, nil
	}
	repo, err := newRepo(rc.location+rest, rc.insecure)
	if err != nil {
		return nil, fmt.Errorf("registries conf: location %s: %w", rc.location, err)
	}
	return retarget(r, repo), nil
}

// of returns the repositories mirroring repo, in order, that serve a
// by-digest request (byDigest) or a tag request.
func (m *mirrors) of(repo name.Repository, byDigest bool) []name.Repository {
	rc, rest := m.match(repoString(repo))
	if rc == nil {
		return nil
	}
	var out []name.Repository
	for _, mc := range rc.mirrors {
		if (byDigest && !mc.digest) || (!byDigest && !mc.tags) {
			continue
		}
		if r, err := newRepo(mc.location+rest, mc.insecure); err == nil {
			out = append(out, r)
		}
	}
	return out
}

func newRepo(s string, insecure bool) (name.Repository, error) {
	if insecure {
		return name.NewRepository(s, name.Insecure)
	}
	return name.NewRepository(s)
}
