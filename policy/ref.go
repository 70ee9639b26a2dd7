package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// named is a docker reference as the policy compares it: its repository
// normalized as Docker and containers/image do (docker.io/library/x for
// a bare x), and its tag or digest.
type named struct {
	repo   string
	tag    string
	digest string
}

// String is the normalized reference.
func (n named) String() string {
	switch {
	case n.digest != "":
		return n.repo + "@" + n.digest
	case n.tag != "":
		return n.repo + ":" + n.tag
	}
	return n.repo
}

// normalize parses a docker reference [HOST[:PORT]/]PATH[:TAG][@DIGEST].
func normalize(s string) (named, error) {
	var n named
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d, err := digest.Parse(rest[i+1:])
		if err != nil {
			return named{}, fmt.Errorf("reference %q: %w", s, err)
		}
		n.digest, rest = d.String(), rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		n.tag, rest = rest[i+1:], rest[:i]
		if n.tag == "" {
			return named{}, fmt.Errorf("reference %q: empty tag", s)
		}
	}
	if rest == "" || strings.HasPrefix(rest, "/") || strings.HasSuffix(rest, "/") || strings.Contains(rest, "//") {
		return named{}, fmt.Errorf("reference %q: malformed repository", s)
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
		host, path = "docker.io", rest
	}
	if host == "index.docker.io" {
		host = "docker.io"
	}
	if path == "" {
		return named{}, errors.New("reference " + s + ": no repository")
	}
	if strings.ToLower(path) != path {
		return named{}, fmt.Errorf("reference %q: a repository path is lower case", s)
	}
	if host == "docker.io" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	n.repo = host + "/" + path
	return n, nil
}

// dockerScopes lists the scopes that may name reference n, most specific
// first: repository:tag, the repository, each namespace up to the host,
// then wildcards for the host's parent domains.
func dockerScopes(n named) []string {
	var out []string
	if n.tag != "" {
		out = append(out, n.repo+":"+n.tag)
	}
	for s := n.repo; ; {
		out = append(out, s)
		i := strings.LastIndexByte(s, '/')
		if i < 0 {
			break
		}
		s = s[:i]
	}
	host, _, _ := strings.Cut(n.repo, "/")
	host, _, _ = strings.Cut(host, ":")
	for i := strings.IndexByte(host, '.'); i >= 0; {
		out = append(out, "*"+host[i:])
		j := strings.IndexByte(host[i+1:], '.')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return out
}

// match reports whether signed reference s satisfies identity rule id for
// image reference img.
func (id Identity) match(img, s named) bool {
	switch id.Type {
	case "matchExact":
		return img.digest == "" && img.tag != "" && s == img
	case "matchRepoDigestOrExact":
		if img.digest != "" {
			return s.repo == img.repo
		}
		return img.tag != "" && s == img
	case "matchRepository":
		return s.repo == img.repo
	case "exactReference":
		return s.String() == id.Reference
	case "exactRepository":
		return s.repo == id.Repository
	}
	return false
}
