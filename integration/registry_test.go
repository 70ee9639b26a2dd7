package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/testregistry"
)

// A real registry for the tests: internal/testregistry's docker-registry,
// started per test and stopped in t.Cleanup, with what the tests add: a
// login for the docker CLI, and counters that fail the test rather than
// return an error.

// registryOpts configures startRegistry. The zero value is an open
// registry; User and Password turn on htpasswd (bcrypt) auth.
type registryOpts struct {
	User, Password string

	// pickPort, if set, replaces freePort (for the helper's own test of a
	// port that is taken).
	pickPort func(t *testing.T) int
}

// registry is one docker-registry process started by startRegistry.
type registry struct {
	*testregistry.Registry
	t    *testing.T
	opts registryOpts

	// dockerConfig is a DOCKER_CONFIG directory holding a login to this
	// registry ("" without auth); docker commands against it use it.
	dockerConfig string
}

// startRegistry starts docker-registry on a free port of 127.0.0.1 (see
// testregistry.Start); it stops in t.Cleanup, or earlier by Stop.
func startRegistry(t *testing.T, opts registryOpts) *registry {
	t.Helper()
	dir := t.TempDir()
	var opt testregistry.Options
	if opts.User != "" {
		p, err := testregistry.WriteHtpasswd(dir, opts.User, opts.Password)
		if err != nil {
			t.Fatal(err)
		}
		opt.Htpasswd = p
	}
	if opts.pickPort != nil {
		opt.PickPort = func() (int, error) { return opts.pickPort(t), nil }
	}
	reg, err := testregistry.Start(context.Background(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	r := &registry{Registry: reg, t: t, opts: opts}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("docker-registry on %s, its log:\n%s", r.Addr(), r.Log())
		}
	})
	if opts.User != "" {
		r.login(t)
	}
	return r
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testregistry.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// counts is the access log's counts now (see testregistry.Counts).
func (r *registry) counts() testregistry.Counts {
	r.t.Helper()
	c, err := r.Counts(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// BlobGets returns how many GET requests for blob d the registry has
// logged, whatever their status, including every request a client had
// finished before the call.
func (r *registry) BlobGets(d digest.Digest) int {
	r.t.Helper()
	return r.counts().BlobGets[d]
}

// AllBlobGets returns the number of blob GETs per digest (see BlobGets).
func (r *registry) AllBlobGets() map[digest.Digest]int {
	r.t.Helper()
	return r.counts().BlobGets
}

// Stop stops the registry and returns once it has exited: its port then
// refuses connections. Idempotent.
func (r *registry) Stop() {
	if !r.Registry.Stop() {
		r.t.Errorf("docker-registry on %s: still running %v after SIGTERM; sent SIGKILL", r.Addr(), testregistry.Limit)
	}
}

// DockerEnv is the environment for a docker CLI command against r: with
// auth, DOCKER_CONFIG points at a directory logged in to r.
func (r *registry) DockerEnv() []string {
	env := os.Environ()
	if r.dockerConfig != "" {
		env = append(env, "DOCKER_CONFIG="+r.dockerConfig)
	}
	return env
}

// login logs in to r with docker login in a temporary DOCKER_CONFIG, so
// the logins of parallel tests and the user's own ~/.docker stay apart.
func (r *registry) login(t *testing.T) {
	t.Helper()
	r.dockerConfig = t.TempDir()
	if out, err := r.docker(strings.NewReader(r.opts.Password),
		"login", "--username", r.opts.User, "--password-stdin", r.Addr()); err != nil {
		t.Fatalf("docker login %s: %v\n%s", r.Addr(), err, out)
	}
}

// docker runs the docker CLI with r's DockerEnv and returns its output.
func (r *registry) docker(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = r.DockerEnv()
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushImage pushes the local image localRef (REPO:TAG, from
// internal/testimage) to reg under the same REPO:TAG and returns the
// remote reference, 127.0.0.1:PORT/REPO:TAG.
func pushImage(t *testing.T, reg *registry, localRef string) string {
	t.Helper()
	return pushImageAs(t, reg, localRef, localRef)
}

// pushImageAs pushes the local image localRef to reg as NAME:TAG (nameTag)
// and returns 127.0.0.1:PORT/NAME:TAG: two images under one name, or one
// tag moved from v1 to v2. The extra local tag is removed again in
// t.Cleanup; the image and the registry's copy stay.
func pushImageAs(t *testing.T, reg *registry, localRef, nameTag string) string {
	t.Helper()
	if strings.Contains(nameTag, "@") || !strings.Contains(nameTag, ":") {
		t.Fatalf("pushImage %q: want NAME:TAG", nameTag)
	}
	remote := reg.Addr() + "/" + nameTag
	if out, err := reg.docker(nil, "tag", localRef, remote); err != nil {
		t.Fatalf("docker tag %s %s: %v\n%s", localRef, remote, err, out)
	}
	t.Cleanup(func() {
		if out, err := reg.docker(nil, "rmi", remote); err != nil {
			t.Logf("docker rmi %s: %v\n%s", remote, err, out)
		}
	})
	if out, err := reg.docker(nil, "push", remote); err != nil {
		t.Fatalf("docker push %s: %v\n%s", remote, err, out)
	}
	return remote
}

// ManifestRequests returns how many manifest requests (by tag or digest,
// any status) the registry has logged per method ("GET", "HEAD", "PUT"),
// including every request a client had finished before the call.
func (r *registry) ManifestRequests() map[string]int {
	r.t.Helper()
	return r.counts().Manifests
}

// Requests returns how many requests the registry has logged, any path
// and status, except the helper's own markers.
func (r *registry) Requests() int {
	r.t.Helper()
	return r.counts().Requests
}
