package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/testimage"
)

// writeDockerConfig writes a DOCKER_CONFIG directory whose config.json
// holds a login (user:password) for addr, as `docker login` writes it
// without a credential helper, and returns the directory.
func writeDockerConfig(t *testing.T, addr, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		addr: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPullAuth: from a registry with htpasswd auth, the login `docker
// login` wrote to a temporary DOCKER_CONFIG lets rootswap pull (through
// go-containerregistry's default keychain); a wrong password, or no login
// at all, is exit 1 and one line naming the registry and saying that
// authentication failed.
func TestPullAuth(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	const user, password = "rootswap", "test-password-2"
	reg := startRegistry(t, registryOpts{User: user, Password: password})
	ref := pushImageAs(t, reg, v1, "rootswap-test/auth:v1")
	src := "docker://" + ref

	s := newStore(t)
	s.env = []string{"DOCKER_CONFIG=" + reg.dockerConfig}
	if got, want := strings.TrimSpace(s.ok("import", src)), testimage.ImageID(t, v1); got != want {
		t.Fatalf("import %s with the login: %s, want %s", src, got, want)
	}

	for _, c := range []struct{ what, config string }{
		{"a wrong password", writeDockerConfig(t, reg.Addr(), user, password+"x")},
		{"no login", t.TempDir()},
	} {
		t.Run(c.what, func(t *testing.T) {
			s := newStore(t)
			s.env = []string{"DOCKER_CONFIG=" + c.config}
			r := s.fail(1, []string{reg.Addr(), "authentication failed"}, "import", src)
			if n := len(strings.Split(strings.TrimSpace(r.stderr), "\n")); n != 1 {
				t.Errorf("import with %s: %d lines on stderr, want one:\n%s", c.what, n, r.stderr)
			}
			if len(s.images()) != 0 {
				t.Errorf("import with %s left an image in the store", c.what)
			}
		})
	}
}

// writeMirrorsConf writes a mirror configuration that sends pulls of
// upstream (HOST:PORT) to mirror first and returns the environment
// variable that points rootswap at it and the file's path.
//
// The format is the containers-registries.conf(5) subset rootswap reads
// (README "Image sources"), named by ROOTSWAP_REGISTRIES_CONF.
func writeMirrorsConf(t *testing.T, upstream, mirror string) (envKey, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "registries.conf")
	conf := fmt.Sprintf(`[[registry]]
location = %q
insecure = true

[[registry.mirror]]
location = %q
insecure = true
`, upstream, mirror)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return "ROOTSWAP_REGISTRIES_CONF", path
}

// TestPullMirror: with a mirror configured in front of the registry, a
// pull goes to the mirror and, when the mirror is down (a closed port)
// falls back to the upstream registry: the import succeeds with the
// image's tree, fetching its layers from the upstream once each. A mirror
// that is up serves the pull itself: the upstream is not asked for a blob.
func TestPullMirror(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	up := startRegistry(t, registryOpts{})
	ref := pushImageAs(t, up, v1, "rootswap-test/mirrored:v1")
	f := factsOf(t, remoteImage(t, ref))
	id := testimage.ImageID(t, v1)

	t.Run("mirror down", func(t *testing.T) {
		down := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens
		key, conf := writeMirrorsConf(t, up.Addr(), down)
		s := newStore(t)
		s.env = []string{key + "=" + conf}
		c := countsOf(up)
		r := s.run("import", "docker://"+ref)
		if r.code != 0 || strings.TrimSpace(r.stdout) != id {
			t.Fatalf("import through a mirror that is down: exit %d, %q %q; want %s from the upstream", r.code, r.stdout, r.stderr, id)
		}
		wantBlobs(t, "mirror down: upstream", c.since(up), f.config, f.blobs)
	})

	t.Run("mirror up", func(t *testing.T) {
		mirror := startRegistry(t, registryOpts{})
		fm := factsOf(t, remoteImage(t, pushImageAs(t, mirror, v1, "rootswap-test/mirrored:v1")))
		key, conf := writeMirrorsConf(t, up.Addr(), mirror.Addr())
		s := newStore(t)
		s.env = []string{key + "=" + conf}
		cu, cm := countsOf(up), countsOf(mirror)
		r := s.run("import", "docker://"+ref)
		if r.code != 0 || strings.TrimSpace(r.stdout) != id {
			t.Fatalf("import through a mirror: exit %d, %q %q; want %s", r.code, r.stdout, r.stderr, id)
		}
		wantBlobs(t, "mirror up: mirror", cm.since(mirror), fm.config, fm.blobs)
		if d := cu.since(up); len(d.blobs) != 0 {
			t.Errorf("mirror up: the upstream served blobs %v, want none", d.blobs)
		}
	})
}

// TestPullAuthWithoutHome: under a systemd unit without User= there is no
// $HOME, and the keychain used to look for no Docker config at all, so a
// private registry that worked from a root shell failed at boot with
// "authentication failed" (issue 17, item 4). With HOME unset rootswap
// reads the Docker config of the passwd entry's home directory. The test
// runs the binary in a mount namespace of its own, with a temporary
// directory bound over that home, so the real one is neither read nor
// written.
func TestPullAuthWithoutHome(t *testing.T) {
	needIntegration(t)
	u, err := user.Current()
	if err != nil || u.HomeDir == "" {
		t.Fatalf("this user's passwd entry: %+v, %v", u, err)
	}
	v1, _ := testimage.Images(t)
	const account, password = "rootswap", "test-password-3"
	reg := startRegistry(t, registryOpts{User: account, Password: password})
	src := "docker://" + pushImageAs(t, reg, v1, "rootswap-test/nohome:v1")
	home := t.TempDir()
	login := writeDockerConfig(t, reg.Addr(), account, password)
	if err := os.Rename(login, filepath.Join(home, ".docker")); err != nil {
		t.Fatal(err)
	}

	s := newStore(t)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`,
		"sh", home, u.HomeDir, rootswapBin(t), "--root", s.root, "import", src)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "HOME" && k != "DOCKER_CONFIG" && k != "REGISTRY_AUTH_FILE" && k != "XDG_CONFIG_HOME" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("import %s with HOME unset and the login in %s/.docker: %v\n%s", src, u.HomeDir, err, stderr)
	}
	if got, want := strings.TrimSpace(string(out)), testimage.ImageID(t, v1); got != want {
		t.Fatalf("import %s with HOME unset: %s, want %s", src, got, want)
	}
}
