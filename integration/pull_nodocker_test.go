package integration

import (
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/testimage"
)

// TestPullNoDocker: a node with no Docker daemon at all (DOCKER_HOST
// points at a socket that does not exist) runs one whole cycle from a
// registry source: prepare --pull v1, run it under systemd-nspawn, the
// tag moves to v2, prepare --pull upgrades, run shows v2, rollback, run
// shows v1 again. The unit it would run under neither wants nor orders
// after docker.service.
func TestPullNoDocker(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	const repo = "rootswap-test/nodocker"
	src := "docker://" + reg.Addr() + "/" + repo + ":stable"
	pushImageAs(t, reg, v1, repo+":stable") // docker pushes: the test's daemon, not the node's
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)

	s := newStore(t)
	s.env = []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}
	version := func(what, want string) {
		t.Helper()
		if got := s.ok("run", "node", "/bin/cat", "/etc/rootswap-version"); strings.TrimSpace(got) != want {
			t.Fatalf("%s: run printed %q, want %q", what, got, want)
		}
	}
	out := s.ok("prepare", "--pull", "node", src)
	if !strings.Contains(out, "generation 1") || !strings.Contains(out, d1) {
		t.Fatalf("prepare --pull %s with no Docker: %q, want generation 1 at %s", src, out, d1)
	}
	version("v1", "v1")

	pushImageAs(t, reg, v2, repo+":stable")
	out = s.ok("prepare", "--pull", "node", src)
	if !strings.Contains(out, "generation 2") || !strings.Contains(out, d2) || !strings.Contains(out, "imported") {
		t.Fatalf("upgrade with no Docker: %q, want generation 2 imported at %s", out, d2)
	}
	version("after the upgrade", "v2")

	out = s.ok("rollback", "node")
	if !strings.Contains(out, "generation 1") {
		t.Fatalf("rollback: %q", out)
	}
	version("after the rollback", "v1")

	unit := s.ok("unit", "node", src, "--", "/bin/sh", "-c", "sleep infinity")
	if strings.Contains(unit, "docker.service") {
		t.Errorf("the unit for a registry image mentions docker.service:\n%s", unit)
	}
	if !strings.Contains(unit, src) {
		t.Errorf("the unit does not prepare %s:\n%s", src, unit)
	}
}
