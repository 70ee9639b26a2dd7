package docker

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/snapshot"
)

// fakeDocker holds containers; creation, export, listing and removal do
// just enough for the reaper and the export stream.
type fakeDocker struct {
	inspect    image.InspectResponse // what ImageInspect says; with no ID, an image whose ID is the ref's digest
	containers []container.Summary
	removed    []string
	exportErr  error
}

func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if f.inspect.ID == "" {
		return image.InspectResponse{ID: digest.FromString(ref).String()}, nil
	}
	return f.inspect, nil
}
func (f *fakeDocker) ImagePull(context.Context, string, image.PullOptions) (io.ReadCloser, error) {
	return nil, nil
}
func (f *fakeDocker) ContainerCreate(context.Context, *container.Config, *container.HostConfig, *network.NetworkingConfig, *ocispec.Platform, string) (container.CreateResponse, error) {
	return container.CreateResponse{ID: "export"}, nil
}
func (f *fakeDocker) ContainerExport(context.Context, string) (io.ReadCloser, error) {
	if f.exportErr != nil {
		return nil, f.exportErr
	}
	return io.NopCloser(strings.NewReader("tar")), nil
}
func (f *fakeDocker) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.removed = append(f.removed, id)
	return nil
}
func (f *fakeDocker) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return f.containers, nil
}

func TestReapRemovesOnlyDeadImportsOfThisHost(t *testing.T) {
	host, _ := os.Hostname()
	// A pid that is certainly not a running rootswap: above pid_max.
	dead := strconv.Itoa(1 << 23)
	f := &fakeDocker{containers: []container.Summary{
		{ID: "dead", Labels: map[string]string{labelExport: "x", labelPID: dead, labelHost: host}},
		{ID: "nopid", Labels: map[string]string{labelExport: "x", labelHost: host}},
		{ID: "unlabelled", Labels: map[string]string{labelExport: "x"}},
		{ID: "live", Labels: map[string]string{labelExport: "x", labelPID: strconv.Itoa(os.Getpid()), labelHost: host}},
		{ID: "otherhost", Labels: map[string]string{labelExport: "x", labelPID: dead, labelHost: host + "-other"}},
		// A container of this host but another PID namespace (a
		// container or test bed with the host's hostname, as a
		// debootstrapped tree has): its pid means nothing here.
		{ID: "otherns", Labels: map[string]string{labelExport: "x", labelPID: dead, labelHost: host, labelPIDNS: "pid:[1]"}},
		{ID: "samens", Labels: map[string]string{labelExport: "x", labelPID: dead, labelHost: host, labelPIDNS: pidNamespace()}},
	}}
	reap(context.Background(), f)
	slices.Sort(f.removed)
	if !slices.Equal(f.removed, []string{"dead", "nopid", "samens", "unlabelled"}) {
		t.Errorf("reap removed %v, want [dead nopid samens unlabelled]", f.removed)
	}
}

// The export container goes when the stream is closed, and at once when
// the export cannot start.
func TestExportRemovesItsContainer(t *testing.T) {
	ctx := context.Background()
	f := &fakeDocker{}
	img, err := New(f, nil).Resolve(ctx, snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:1", Bare: true})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers(ctx)
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.removed) != 0 {
		t.Fatalf("container removed while its export is open: %v", f.removed)
	}
	rc.Close()
	if !slices.Equal(f.removed, []string{"export"}) {
		t.Errorf("after close, removed %v, want [export]", f.removed)
	}
	f = &fakeDocker{exportErr: errors.New("export refused")}
	if _, err := (&daemonImage{c: f, d: digest.FromString("image")}).Layers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := (export{f, digest.FromString("image")}).Open(ctx); err == nil || !slices.Equal(f.removed, []string{"export"}) {
		t.Errorf("failed export: %v, removed %v", err, f.removed)
	}
}

// Resolve's image carries what the daemon says: its ID as the digest, no
// manifest digest, and the config as the OCI image spec has it.
func TestResolveCarriesConfig(t *testing.T) {
	id := digest.FromString("config")
	f := &fakeDocker{inspect: image.InspectResponse{
		ID: id.String(), Os: "linux", Architecture: "arm64", Variant: "v8",
		Created: "2024-01-02T03:04:05.123456789Z",
		Config: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{
			User: "app", Env: []string{"A=1"}, Entrypoint: []string{"/bin/app"}, Cmd: []string{"serve"},
			WorkingDir: "/srv", StopSignal: "SIGINT",
		}, DockerOCIImageConfigExt: dockerspec.DockerOCIImageConfigExt{Healthcheck: &dockerspec.HealthcheckConfig{
			Test: []string{"CMD", "/bin/app", "check"}, Interval: 5 * time.Second, Retries: 3,
		}}},
		RootFS: image.RootFS{Type: "layers", Layers: []string{digest.FromString("l1").String()}},
	}}
	ref := snapshot.Ref{Transport: snapshot.DockerDaemon, Name: "app:1"}
	img, err := New(f, nil).Resolve(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != id || img.Manifest != "" || img.Ref != ref {
		t.Fatalf("image %+v, want digest %s, no manifest, ref %s", img, id, ref)
	}
	c, err := img.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	o := c.OCI
	if c.Raw != nil || o.OS != "linux" || o.Architecture != "arm64" || o.Variant != "v8" || o.Created == nil || o.Created.Nanosecond() != 123456789 ||
		o.Config.User != "app" || !slices.Equal(o.Config.Entrypoint, []string{"/bin/app"}) || !slices.Equal(o.Config.Cmd, []string{"serve"}) ||
		!slices.Equal(o.Config.Env, []string{"A=1"}) || o.Config.WorkingDir != "/srv" || o.Config.StopSignal != "SIGINT" ||
		!slices.Equal(o.RootFS.DiffIDs, []digest.Digest{digest.FromString("l1")}) {
		t.Errorf("config %+v (raw %q)", o, c.Raw)
	}
	// The HEALTHCHECK, which the OCI spec has no field for, in Docker's form.
	if got := string(c.Healthcheck); got != `{"Test":["CMD","/bin/app","check"],"Interval":5000000000,"Retries":3}` {
		t.Errorf("healthcheck %s", got)
	}
	if _, err := New(f, nil).Resolve(context.Background(), snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:1"}); err == nil {
		t.Error("the daemon resolved a docker:// reference")
	}
}
