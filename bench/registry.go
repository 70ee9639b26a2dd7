package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/rootswap/rootswap/internal/testregistry"
)

// registry is internal/testregistry's docker-registry on 127.0.0.1,
// started by the benchmark itself, storage under its own directory; its
// access log counts the blob bytes each tool fetches.
type registry struct {
	*testregistry.Registry
	addr string // 127.0.0.1:PORT
	dir  string // its storage and configuration
}

// traffic is what the access log shows of blob GETs.
type traffic struct {
	Bytes int64 // response bytes
	Gets  int
}

func (t traffic) minus(o traffic) traffic { return traffic{t.Bytes - o.Bytes, t.Gets - o.Gets} }

// startRegistry starts docker-registry on a free port, storage in dir,
// and returns once its access log shows a request of ours.
func startRegistry(ctx context.Context, dir string) (*registry, error) {
	r, err := testregistry.Start(ctx, dir, testregistry.Options{LogLevel: "warn"})
	if err != nil {
		return nil, err
	}
	return &registry{Registry: r, addr: r.Addr(), dir: dir}, nil
}

// traffic returns the blob GETs logged up to now.
func (r *registry) traffic(ctx context.Context) (traffic, error) {
	c, err := r.Counts(ctx)
	if err != nil {
		return traffic{}, err
	}
	t := traffic{Bytes: c.BlobBytes}
	for _, n := range c.BlobGets {
		t.Gets += n
	}
	return t, nil
}

// stop ends the registry process this benchmark started.
func (r *registry) stop() { r.Stop() }

// manifestTypes are the manifest media types asked for: the image
// manifests docker push writes (no lists: the images are single-platform).
const manifestTypes = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

// manifest is the part of an image manifest the benchmark reads.
type manifest struct {
	MediaType string `json:"mediaType"`
	Config    blob   `json:"config"`
	Layers    []blob `json:"layers"`
	raw       []byte
}

type blob struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	Digest    string `json:"digest"`
}

func (r *registry) manifest(ctx context.Context, repo, ref string) (*manifest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestTypes)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("manifest %s:%s: %s", repo, ref, resp.Status)
	}
	m := &manifest{raw: data}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	if m.MediaType == "" {
		m.MediaType = resp.Header.Get("Content-Type")
	}
	return m, nil
}

// tag points repo:tag at the manifest m (one PUT, no blobs move): how the
// upgrade scenario moves one tag from v1 to v2 between the untimed pull
// of v1 and the timed pull of the same reference.
func (r *registry) tag(ctx context.Context, repo, tag string, m *manifest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+r.addr+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m.raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", m.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("tag %s:%s: %w", repo, tag, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("tag %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}

// blob opens repo's blob d.
func (r *registry) blob(ctx context.Context, repo, d string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v2/"+repo+"/blobs/"+d, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s: %s", d, resp.Status)
	}
	return resp.Body, nil
}

// push copies a local image of the shared daemon to repo:tag in the
// registry with docker push (gzip layers, as any Docker user's are) and
// drops the extra local tag again.
func (r *registry) push(ctx context.Context, image, repo, tag string) error {
	ref := r.addr + "/" + repo + ":" + tag
	if _, err := docker(ctx, nil, "tag", image, ref); err != nil {
		return err
	}
	defer docker(context.WithoutCancel(ctx), nil, "rmi", ref)
	_, err := docker(ctx, nil, "push", "-q", ref)
	return err
}
