package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/internal/failpoint"
)

// Docker is the subset of the Docker client that rootswap uses; *client.Client
// satisfies it, and unit tests pass a fake.
type Docker interface {
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error)
	ContainerCreate(ctx context.Context, config *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerExport(ctx context.Context, id string) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
}

// Labels on export containers: which image, and which process on which
// host created it, so a later import can remove what a killed one left.
const (
	labelExport = "org.rootswap.export"
	labelPID    = "org.rootswap.pid"
	labelHost   = "org.rootswap.host"
)

// Conditions the CLI branches on.
var (
	ErrImageNotFound = errors.New("image not found")
	ErrUnreachable   = errors.New("docker daemon unreachable")
)

// NewClient connects lazily to the daemon named by DOCKER_HOST (or the
// default socket), negotiating the API version.
func NewClient() (*client.Client, error) {
	return client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
}

func classify(ref string, err error) error {
	switch {
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("image %s: %w: %v", ref, ErrUnreachable, err)
	case client.IsErrNotFound(err):
		return fmt.Errorf("image %s: %w", ref, ErrImageNotFound)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// Resolve asks the daemon for the image ID that ref (tag, name@digest or
// ID) names: the store key.
func Resolve(ctx context.Context, c Docker, ref string) (digest.Digest, error) {
	img, err := c.ImageInspect(ctx, ref)
	if err != nil {
		return "", classify(ref, err)
	}
	d, err := digest.Parse(img.ID)
	if err != nil {
		return "", fmt.Errorf("image %s: daemon returned ID %q: %w", ref, img.ID, err)
	}
	return d, nil
}

// Pull asks the daemon to pull ref and waits until it is done, writing one
// line per status message to progress (if not nil).
func Pull(ctx context.Context, c Docker, ref string, progress io.Writer) error {
	rc, err := c.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return classify(ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Status, ID, Progress string
			Error                string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
		if m.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, m.Error)
		}
		if progress != nil && m.Status != "" {
			fmt.Fprintf(progress, "pull %s: %s %s %s\n", ref, m.ID, m.Status, m.Progress)
		}
	}
}

// export creates a container from image d (never started) and opens its
// export stream. cleanup closes the stream and removes the container; it
// runs even when ctx is cancelled.
func export(ctx context.Context, c Docker, d digest.Digest) (io.ReadCloser, func(), error) {
	reap(ctx, c)
	host, _ := os.Hostname()
	name := fmt.Sprintf("rootswap-export-%s-%d", d.Encoded()[:12], os.Getpid())
	cr, err := c.ContainerCreate(ctx, &container.Config{
		Image:           d.String(),
		Cmd:             []string{"/rootswap-export-never-started"}, // images without CMD need one to be created
		Entrypoint:      []string{},
		NetworkDisabled: true,
		Labels:          map[string]string{labelExport: d.String(), labelPID: strconv.Itoa(os.Getpid()), labelHost: host},
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		return nil, nil, classify(d.String(), err)
	}
	failpoint.Hit("snapshot-container-created")
	remove := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		c.ContainerRemove(rctx, cr.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	rc, err := c.ContainerExport(ctx, cr.ID)
	if err != nil {
		remove()
		return nil, nil, classify(d.String(), err)
	}
	return rc, func() { rc.Close(); remove() }, nil
}

// reap removes export containers that an import on this host created and
// could not remove because it was killed: its process is gone. It is best
// effort and runs only on the cold path, before a new export.
func reap(ctx context.Context, c Docker) {
	host, _ := os.Hostname()
	list, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelExport))})
	if err != nil {
		return
	}
	for _, ct := range list {
		pid, err := strconv.Atoi(ct.Labels[labelPID])
		if h, ok := ct.Labels[labelHost]; (ok && h != host) || (err == nil && alive(pid)) {
			continue
		}
		c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
}

// alive reports whether pid is a running process (not a zombie). A reused
// pid keeps a dead import's container until that process ends: a leak,
// never the removal of a live export.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S …": the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}
