package docker

import (
	"context"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeDocker holds containers; only listing and removal do anything.
type fakeDocker struct {
	containers []container.Summary
	removed    []string
}

func (f *fakeDocker) ImageInspect(context.Context, string, ...client.ImageInspectOption) (image.InspectResponse, error) {
	return image.InspectResponse{}, nil
}
func (f *fakeDocker) ImagePull(context.Context, string, image.PullOptions) (io.ReadCloser, error) {
	return nil, nil
}
func (f *fakeDocker) ContainerCreate(context.Context, *container.Config, *container.HostConfig, *network.NetworkingConfig, *ocispec.Platform, string) (container.CreateResponse, error) {
	return container.CreateResponse{}, nil
}
func (f *fakeDocker) ContainerExport(context.Context, string) (io.ReadCloser, error) { return nil, nil }
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
	}}
	reap(context.Background(), f)
	slices.Sort(f.removed)
	if !slices.Equal(f.removed, []string{"dead", "nopid", "unlabelled"}) {
		t.Errorf("reap removed %v, want [dead nopid unlabelled]", f.removed)
	}
}
