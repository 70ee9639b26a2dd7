package integration

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/testimage"
)

// The tests of the registry helper itself (registry_test.go).

// manifestAccept is what a pulling client accepts: Docker v2 and OCI
// manifests, and the lists/indexes that point at them.
var manifestAccept = []string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.index.v1+json",
}

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"` // of a list or index
}

// regGet does GET http://ADDR/PATH, with basic auth if user is set, and
// returns the status, the headers and the whole body.
func regGet(t *testing.T, reg *registry, path, user, password string, accept ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+reg.Addr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	if len(accept) > 0 {
		req.Header.Set("Accept", strings.Join(accept, ", "))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, resp.Header, body
}

// tagsList returns the tags of name.
func tagsList(t *testing.T, reg *registry, name, user, password string) []string {
	t.Helper()
	code, _, body := regGet(t, reg, "/v2/"+name+"/tags/list", user, password)
	if code != http.StatusOK {
		t.Fatalf("GET /v2/%s/tags/list: %d %s", name, code, body)
	}
	var l struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("GET /v2/%s/tags/list: %v: %s", name, err, body)
	}
	slices.Sort(l.Tags)
	return l.Tags
}

// getManifest fetches name:ref's image manifest, following a list or
// index to its linux/GOARCH entry, and checks Docker-Content-Digest.
func getManifest(t *testing.T, reg *registry, name, ref string) manifest {
	t.Helper()
	for range 2 {
		path := "/v2/" + name + "/manifests/" + ref
		code, h, body := regGet(t, reg, path, "", "", manifestAccept...)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if got, want := h.Get("Docker-Content-Digest"), digest.FromBytes(body).String(); got != want {
			t.Fatalf("GET %s: Docker-Content-Digest %q, the body hashes to %s", path, got, want)
		}
		var m manifest
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		if len(m.Manifests) == 0 {
			return m
		}
		i := slices.IndexFunc(m.Manifests, func(d descriptor) bool {
			return d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH
		})
		if i < 0 {
			t.Fatalf("GET %s: no linux/%s manifest in %s", path, runtime.GOARCH, body)
		}
		ref = m.Manifests[i].Digest.String()
	}
	t.Fatalf("manifest %s:%s: an index within an index", name, ref)
	return manifest{}
}

// getBlob fetches blob d of name and checks its size and digest.
func getBlob(t *testing.T, reg *registry, name string, d descriptor) {
	t.Helper()
	path := "/v2/" + name + "/blobs/" + d.Digest.String()
	code, _, body := regGet(t, reg, path, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %.200s", path, code, body)
	}
	if int64(len(body)) != d.Size || digest.FromBytes(body) != d.Digest {
		t.Fatalf("GET %s: %d bytes hashing to %s, want %d bytes", path, len(body), digest.FromBytes(body), d.Size)
	}
}

// TestRegistry checks the registry helper: docker pushes to it over plain
// http on 127.0.0.1, it serves Docker v2 manifests, its blob-GET counter
// counts exactly the blob GETs made, and Stop closes its port.
func TestRegistry(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})

	const name = "rootswap-test/app"
	if got, want := pushImageAs(t, reg, v1, name+":v1"), reg.Addr()+"/"+name+":v1"; got != want {
		t.Fatalf("pushImageAs returned %q, want %q", got, want)
	}
	pushImageAs(t, reg, v2, name+":v2")
	if got := tagsList(t, reg, name, "", ""); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Fatalf("tags of %s: %q, want [v1 v2]", name, got)
	}
	remote := pushImage(t, reg, v1)
	repo, tag, _ := strings.Cut(v1, ":")
	if remote != reg.Addr()+"/"+v1 {
		t.Fatalf("pushImage returned %q, want %s/%s", remote, reg.Addr(), v1)
	}
	if got := tagsList(t, reg, repo, "", ""); !slices.Equal(got, []string{tag}) {
		t.Fatalf("tags of %s: %q, want [%s]", repo, got, tag)
	}

	m := getManifest(t, reg, name, "v2")
	// The config blob is the image: its digest is Docker's image ID.
	if got, want := m.Config.Digest.String(), testimage.ImageID(t, v2); got != want {
		t.Fatalf("v2's manifest names config %s, docker has image ID %s", got, want)
	}
	// v1's one layer, then v2's COPY and RUN.
	if len(m.Layers) != 3 {
		t.Fatalf("v2's manifest has %d layers, want 3: %+v", len(m.Layers), m.Layers)
	}
	before := reg.AllBlobGets()
	blobs := append([]descriptor{m.Config}, m.Layers...)
	for _, b := range blobs {
		if n := before[b.Digest]; n != 0 {
			t.Errorf("blob %s: %d GETs counted before any (a push only HEADs and PUTs)", b.Digest, n)
		}
	}
	want := maps.Clone(before)
	for _, b := range blobs {
		getBlob(t, reg, name, b)
		want[b.Digest]++
	}
	// One line per request: a second GET counts again.
	getBlob(t, reg, name, m.Layers[2])
	want[m.Layers[2].Digest]++
	if got := reg.AllBlobGets(); !maps.Equal(got, want) {
		t.Fatalf("blob GETs counted %v, want %v", got, want)
	}
	if n := reg.BlobGets(m.Layers[2].Digest); n != 2 {
		t.Fatalf("BlobGets(%s) = %d after two GETs", m.Layers[2].Digest, n)
	}
	// A manifest GET or a HEAD of a blob is not a blob GET.
	getManifest(t, reg, name, "v1")
	resp, err := http.Head("http://" + reg.Addr() + "/v2/" + name + "/blobs/" + m.Config.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := reg.AllBlobGets(); !maps.Equal(got, want) {
		t.Fatalf("after a manifest GET and a blob HEAD: blob GETs %v, want %v", got, want)
	}

	reg.Stop()
	c, err := net.Dial("tcp", reg.Addr())
	if err == nil {
		c.Close()
		t.Fatalf("%s accepts connections after Stop", reg.Addr())
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s after Stop: %v, want connection refused", reg.Addr(), err)
	}
	// The counts stay readable once it is down.
	if got := reg.AllBlobGets(); !maps.Equal(got, want) {
		t.Fatalf("after Stop: blob GETs %v, want %v", got, want)
	}
	reg.Stop()
}

// TestRegistryAuth checks the htpasswd registry: anonymous requests are
// refused, and docker pushes with the login that startRegistry made in a
// temporary DOCKER_CONFIG (and not without it).
func TestRegistryAuth(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	const user, password = "rootswap", "test-password-1"
	reg := startRegistry(t, registryOpts{User: user, Password: password})

	code, h, body := regGet(t, reg, "/v2/", "", "")
	if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("anonymous GET /v2/: %d, WWW-Authenticate %q: %s; want 401 Basic", code, h.Get("WWW-Authenticate"), body)
	}
	if code, _, body := regGet(t, reg, "/v2/", user, password+"x"); code != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ with a wrong password: %d %s, want 401", code, body)
	}
	if code, _, body := regGet(t, reg, "/v2/", user, password); code != http.StatusOK {
		t.Fatalf("GET /v2/ with the password: %d %s, want 200", code, body)
	}

	// Without the login, docker may not push.
	anon := &registry{dockerConfig: t.TempDir()}
	denied := reg.Addr() + "/rootswap-test/denied:v1"
	if out, err := anon.docker(nil, "tag", v1, denied); err != nil {
		t.Fatalf("docker tag: %v\n%s", err, out)
	}
	t.Cleanup(func() { anon.docker(nil, "rmi", denied) })
	if out, err := anon.docker(nil, "push", denied); err == nil {
		t.Fatalf("docker push %s without a login succeeded:\n%s", denied, out)
	} else {
		t.Logf("docker push without a login, refused as it should be:\n%s", out)
	}
	bad := &registry{dockerConfig: t.TempDir()}
	if out, err := bad.docker(strings.NewReader(password+"x"), "login", "-u", user, "--password-stdin", reg.Addr()); err == nil {
		t.Fatalf("docker login with a wrong password succeeded:\n%s", out)
	}
	if _, err := os.Stat(reg.dockerConfig + "/config.json"); err != nil {
		t.Fatalf("startRegistry's login left no config.json in DOCKER_CONFIG: %v", err)
	}

	if got, remote := pushImage(t, reg, v1), reg.Addr()+"/"+v1; got != remote {
		t.Fatalf("pushImage returned %q, want %q", got, remote)
	}
	repo, tag, _ := strings.Cut(v1, ":")
	if got := tagsList(t, reg, repo, user, password); !slices.Equal(got, []string{tag}) {
		t.Fatalf("tags of %s: %q, want [%s]", repo, got, tag)
	}
}

// TestRegistryPortTaken starts a registry whose first port is held by
// another HTTP server that answers everything: startRegistry must not take
// that server's answers for the registry's, and must move to a free port.
func TestRegistryPortTaken(t *testing.T) {
	needIntegration(t)
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer impostor.Close()
	taken := impostor.Listener.Addr().(*net.TCPAddr).Port
	picks := 0
	reg := startRegistry(t, registryOpts{pickPort: func(t *testing.T) int {
		picks++
		if picks == 1 {
			return taken
		}
		return freePort(t)
	}})
	if picks != 2 {
		t.Fatalf("startRegistry picked %d ports, want 2 (the taken one, then a free one)", picks)
	}
	if reg.Addr() == impostor.Listener.Addr().String() {
		t.Fatalf("startRegistry settled on the taken port %s", reg.Addr())
	}
	code, h, body := regGet(t, reg, "/v2/", "", "")
	if code != http.StatusOK || h.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/ on %s: %d, Docker-Distribution-Api-Version %q: %s", reg.Addr(), code, h.Get("Docker-Distribution-Api-Version"), body)
	}
}
