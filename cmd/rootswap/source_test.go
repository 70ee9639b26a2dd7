package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/snapshot"
)

// TestImageArgument: the IMAGE argument is parsed once, by the transports
// table, into the Ref every later step uses; its String is the argument
// again (a registry's bare REPO:TAG gains its docker://).
func TestImageArgument(t *testing.T) {
	digestRef := "127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64)
	for _, c := range []struct {
		source, in, out string
		want            snapshot.Ref
	}{
		{sourceDaemon, "app:v1", "app:v1", snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:v1", Bare: true}},
		{sourceDaemon, "example.com:5000/app:v1", "example.com:5000/app:v1", snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "example.com:5000/app:v1", Bare: true}},
		{sourceDaemon, "docker:app", "docker:app", snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "docker:app", Bare: true}},
		{sourceDaemon, "docker-daemon:app:v1", "docker-daemon:app:v1", snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:v1"}},
		{sourceDaemon, "docker://example.com/app:v1", "docker://example.com/app:v1", snapshot.Ref{Transport: snapshot.Docker, Name: "example.com/app:v1"}},
		{sourceDaemon, "docker://" + digestRef, "docker://" + digestRef, snapshot.Ref{Transport: snapshot.Docker, Name: digestRef}},
		{sourceRegistry, "example.com/app:v1", "docker://example.com/app:v1", snapshot.Ref{Transport: snapshot.Docker, Name: "example.com/app:v1"}},
		{sourceRegistry, "docker-daemon:app", "docker-daemon:app", snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app"}},
		{sourceDaemon, "oci:/srv/layout:v1", "oci:/srv/layout:v1", snapshot.Ref{Transport: snapshot.OCI, Path: "/srv/layout", Tag: "v1"}},
		{sourceDaemon, "docker-archive:/tmp/a.tar", "docker-archive:/tmp/a.tar", snapshot.Ref{Transport: snapshot.DockerArchive, Path: "/tmp/a.tar"}},
		{sourceDaemon, "oci-archive:/tmp/a.tar:v1", "oci-archive:/tmp/a.tar:v1", snapshot.Ref{Transport: snapshot.OCIArchive, Path: "/tmp/a.tar", Tag: "v1"}},
	} {
		g := &globals{source: c.source}
		got, err := g.image(c.in)
		if err != nil || got != c.want || got.String() != c.out {
			t.Errorf("--source %s: image(%q) = %+v (%s), %v; want %+v (%s)", c.source, c.in, got, got, err, c.want, c.out)
		}
	}
	for _, in := range []string{"docker://", "docker://UPPER/x:y", "docker://a/b@sha256:12", "oci:", "oci-archive:", "docker-archive:", "docker-daemon:", "dockr://reg/app:1", "dir:/srv/app"} {
		g := &globals{source: sourceDaemon}
		if r, err := g.image(in); err == nil || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("image(%q) = %+v, %v; want a usage error naming it", in, r, err)
		}
	}
	g := &globals{source: sourceRegistry}
	if r, err := g.image("UPPER/x:y"); err == nil {
		t.Errorf("--source registry: image(%q) = %+v, want an error", "UPPER/x:y", r)
	}
}
