package docker

import (
	"context"
	"encoding/json"
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
	"github.com/rootswap/rootswap/snapshot"
)

// Client is the subset of the Docker client this package uses (the
// reaper's ContainerList included); *client.Client satisfies it, and unit
// tests pass a fake.
type Client interface {
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error)
	ContainerCreate(ctx context.Context, config *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerExport(ctx context.Context, id string) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
}

// Source is the Docker daemon as a snapshot.Source.
type Source struct {
	c        Client
	progress io.Writer
}

// New returns the daemon behind c as an image source. Pull writes one
// line per status message to progress; nil discards them.
func New(c Client, progress io.Writer) *Source { return &Source{c: c, progress: progress} }

var _ snapshot.Source = (*Source)(nil)

// String is what a user calls this source in messages.
func (s *Source) String() string { return "daemon" }

// Labels on export containers: which image, and which process on which
// host created it, so a later import can remove what a killed one left.
// A pid names a process only in its PID namespace, and containers and
// test beds on one host often share its hostname (debootstrap copies it),
// so the namespace is a label too.
const (
	labelExport = "org.rootswap.export"
	labelPID    = "org.rootswap.pid"
	labelHost   = "org.rootswap.host"
	labelPIDNS  = "org.rootswap.pidns"
)

// pidNamespace names this process's PID namespace ("pid:[4026531836]"),
// or "" if /proc cannot say.
func pidNamespace() string {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return ns
}

// NewClient connects lazily to the daemon named by DOCKER_HOST (or the
// default socket), negotiating the API version.
func NewClient() (*client.Client, error) {
	return client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
}

// check refuses a reference of another transport.
func check(ref snapshot.Ref) error {
	if ref.Transport != snapshot.DockerDaemon || ref.Name == "" {
		return fmt.Errorf("image %s: not a docker-daemon reference", ref)
	}
	return nil
}

func classify(ref string, err error) error {
	switch {
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("image %s: %w: %v", ref, snapshot.ErrUnreachable, err)
	case client.IsErrNotFound(err):
		return fmt.Errorf("image %s: %w", ref, snapshot.ErrImageNotFound)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// Resolve asks the daemon for the image ref (tag, name@digest or ID)
// names: its ID is the image digest, the store key; the daemon has no
// manifest digest to give.
func (s *Source) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if err := check(ref); err != nil {
		return snapshot.Image{}, err
	}
	img, err := s.c.ImageInspect(ctx, ref.Name)
	if err != nil {
		return snapshot.Image{}, classify(ref.String(), err)
	}
	d, err := digest.Parse(img.ID)
	if err != nil {
		return snapshot.Image{}, fmt.Errorf("image %s: daemon returned ID %q: %w", ref, img.ID, err)
	}
	di := &daemonImage{c: s.c, d: d, config: ociConfig(img)}
	if img.Config != nil && img.Config.Healthcheck != nil {
		// Docker's own form, as its config documents hold it.
		if di.healthcheck, err = json.Marshal(img.Config.Healthcheck); err != nil {
			return snapshot.Image{}, fmt.Errorf("image %s: healthcheck: %w", ref, err)
		}
	}
	return snapshot.Image{Ref: ref, Digest: d, Content: di}, nil
}

// ociConfig is what the daemon says of an image's config, as the OCI
// image spec has it.
func ociConfig(img image.InspectResponse) ocispec.Image {
	var c ocispec.Image
	c.Platform = ocispec.Platform{Architecture: img.Architecture, OS: img.Os, OSVersion: img.OsVersion, Variant: img.Variant}
	c.Author = img.Author
	if t, err := time.Parse(time.RFC3339Nano, img.Created); err == nil {
		c.Created = &t
	}
	if img.Config != nil {
		c.Config = img.Config.ImageConfig
	}
	c.RootFS.Type = img.RootFS.Type
	for _, l := range img.RootFS.Layers {
		if d, err := digest.Parse(l); err == nil {
			c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, d)
		}
	}
	return c
}

// Pull asks the daemon to pull ref, waits until it is done, and returns
// the image ref names then.
func (s *Source) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	if err := check(ref); err != nil {
		return snapshot.Image{}, err
	}
	if err := s.pull(ctx, ref); err != nil {
		return snapshot.Image{}, err
	}
	return s.Resolve(ctx, ref)
}

func (s *Source) pull(ctx context.Context, ref snapshot.Ref) error {
	rc, err := s.c.ImagePull(ctx, ref.Name, image.PullOptions{})
	if err != nil {
		return classify(ref.String(), err)
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
		if s.progress != nil && m.Status != "" {
			fmt.Fprintf(s.progress, "pull %s: %s %s %s\n", ref, m.ID, m.Status, m.Progress)
		}
	}
}

// daemonImage is an image in the daemon as Content.
type daemonImage struct {
	c           Client
	d           digest.Digest
	config      ocispec.Image
	healthcheck json.RawMessage // the config's HEALTHCHECK, which ocispec has no field for
}

// Config is the config as the daemon described it when the image was
// resolved; the daemon gives no config document (Raw is nil).
func (di *daemonImage) Config(context.Context) (snapshot.Config, error) {
	return snapshot.Config{OCI: di.config, Healthcheck: di.healthcheck}, nil
}

// Layers returns the one stream the daemon can give: the export of a
// container created from the image, the flattened rootfs.
func (di *daemonImage) Layers(context.Context) ([]snapshot.Layer, error) {
	return []snapshot.Layer{export{di.c, di.d}}, nil
}

// export is image d's rootfs as `docker export` streams it.
type export struct {
	c Client
	d digest.Digest
}

// DiffID is "": an export is no layer of the image's config.
func (export) DiffID() digest.Digest { return "" }

// Blob is "": nothing is fetched.
func (export) Blob() digest.Digest { return "" }

// Open creates a container from the image (never started) and opens its
// export stream. Closing the stream removes the container, even when ctx
// is cancelled.
func (e export) Open(ctx context.Context) (io.ReadCloser, error) {
	c, d := e.c, e.d
	reap(ctx, c)
	host, _ := os.Hostname()
	name := fmt.Sprintf("rootswap-export-%s-%d", d.Encoded()[:12], os.Getpid())
	cr, err := c.ContainerCreate(ctx, &container.Config{
		Image:           d.String(),
		Cmd:             []string{"/rootswap-export-never-started"}, // images without CMD need one to be created
		Entrypoint:      []string{},
		NetworkDisabled: true,
		Labels:          map[string]string{labelExport: d.String(), labelPID: strconv.Itoa(os.Getpid()), labelHost: host, labelPIDNS: pidNamespace()},
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		return nil, classify(d.String(), err)
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
		return nil, classify(d.String(), err)
	}
	return &exportStream{ReadCloser: rc, remove: remove}, nil
}

// exportStream removes its container once the stream is closed.
type exportStream struct {
	io.ReadCloser
	remove func()
}

func (x *exportStream) Close() error {
	err := x.ReadCloser.Close()
	x.remove()
	return err
}

// reap removes export containers that an import on this host, in this
// PID namespace, created and could not remove because it was killed: its
// process is gone. It is best effort and runs only on the cold path,
// before a new export.
func reap(ctx context.Context, c Client) {
	host, _ := os.Hostname()
	ns := pidNamespace()
	list, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelExport))})
	if err != nil {
		return
	}
	for _, ct := range list {
		pid, err := strconv.Atoi(ct.Labels[labelPID])
		if h, ok := ct.Labels[labelHost]; (ok && h != host) || (err == nil && alive(pid)) {
			continue
		}
		if n, ok := ct.Labels[labelPIDNS]; ok && n != ns {
			continue // another namespace's pid: whether it lives cannot be told from here
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
