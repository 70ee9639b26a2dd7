package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/rootswap/rootswap/internal/testimage"
)

// TestImageArchives: `docker save | gzip` (docker-archive:) and a tar of
// an OCI layout, plain and gzipped (oci-archive:, as podman save
// --format oci-archive writes), import through the binary to the image's
// ID and to the tree the plain docker save gives, entry by entry.
func TestImageArchives(t *testing.T) {
	needIntegration(t)
	_, v2 := testimage.Images(t)
	id := testimage.ImageID(t, v2)
	saved := dockerSave(t, v2)
	sPlain, dPlain := importOne(t, "docker-archive:"+saved)
	if dPlain != id {
		t.Fatalf("import docker-archive:%s printed %s, want %s", saved, dPlain, id)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("gzip", "-k", saved)
	img, err := tarball.ImageFromPath(saved, nil)
	if err != nil {
		t.Fatal(err)
	}
	oci := writeOCILayout(t, img, "v2")
	ociTar := filepath.Join(t.TempDir(), "oci.tar")
	run("tar", "-C", oci, "-cf", ociTar, ".")
	run("gzip", "-k", ociTar)
	for _, src := range []string{"docker-archive:" + saved + ".gz", "oci-archive:" + ociTar + ":v2", "oci-archive:" + ociTar + ".gz"} {
		s, d := importOne(t, src)
		if d != id {
			t.Fatalf("import %s printed %s, want %s", src, d, id)
		}
		requireSame(t, src+" vs docker-archive:", s.view(d), sPlain.view(dPlain), false)
		if leftover, _ := filepath.Glob(filepath.Join(s.root, "tmp", "*")); len(leftover) != 0 {
			t.Errorf("import %s left %v in the store's tmp/", src, leftover)
		}
	}
	// A truncated gzip archive is one line naming it, and no tree.
	b := strings.TrimSuffix(saved, ".tar") + "-cut.tar.gz"
	run("sh", "-c", "head -c 20000 "+saved+".gz > "+b)
	newStore(t).fail(1, []string{b}, "import", "docker-archive:"+b)
}
