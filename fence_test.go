// Package fence holds the dependency fences of the module: which of our
// packages may import each heavy dependency directly. It has no code of
// its own, only this test.
package fence

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/rootswap/rootswap/"

// fences maps a dependency (an import path and everything below it) to
// the packages of this module allowed to import it directly, each with
// its reason. A package's tests count as the package; a transitive
// import does not count (cmd/rootswap reaches bbolt through cache, and
// that is the point of cache).
var fences = []struct {
	dep     string
	allowed map[string]string
}{
	{"go.etcd.io/bbolt", map[string]string{
		"index": "the index: every bbolt record, the damage guard and the file checks",
	}},
	{"github.com/docker/docker", map[string]string{
		"snapshot/docker":          "the Docker image source, the client's one home",
		"integration":              "tests set up fixture images and check for leaked containers through the Docker client",
		"bench":                    "the benchmark builds its fixture images through the Docker client",
		"bench/floor/dockerclient": "the bench's floor program: it links the Docker client and exits, to time its start-up",
	}},
	{"github.com/google/go-containerregistry", map[string]string{
		"snapshot/registry": "the registry, OCI layout and docker-archive sources: the registry protocol's one home",
		"integration":       "tests write zstd, OCI-layout and hostile images to the test registry",
		"bench":             "the benchmark pushes its fixture images to the loopback registry",
	}},
	{"github.com/BurntSushi/toml", map[string]string{
		"snapshot/registry": "registries.conf, the mirror configuration",
	}},
	{"github.com/klauspost/compress", map[string]string{
		"snapshot/registry": "layer decompression (gzip, zstd), next to the blobs it reads",
		"integration":       "tests write zstd layers and check that they decompress to their diffIDs",
		"bench":             "the registry floor decompresses layers with the registry source's gunzip",
	}},
	{"github.com/sigstore", map[string]string{
		"policy":                "Sigstore bundles verified offline (sigstore-go): the cryptography of the signature policy, beside it",
		"internal/sigstoretest": "the test kit that signs bundles as cosign v3 does, with a test CA and an in-process Rekor",
	}},
	{"golang.org/x/sys/unix", map[string]string{
		"internal/fsys": "the one home of the Linux calls package os lacks",
	}},
	{"github.com/spf13/cobra", map[string]string{
		"cmd/rootswap": "the CLI",
	}},
	{"github.com/spf13/pflag", map[string]string{
		"cmd/rootswap": "cobra's flags, the CLI's alone",
	}},
	{"github.com/coreos/go-systemd", map[string]string{
		"activate":         "machined registration and the systemd environment of run",
		"unit":             "the unit generator writes unit files with go-systemd's unit package",
		"internal/journal": "the slog handler sends to the journal",
		"integration":      "tests parse the generated units",
	}},
}

// floors says which of this module's packages a package's code may not
// import: the sources hand images to snapshot and never reach the store
// behind it (the ref cache is cache.Store's, passed in), the policy
// judges images without fetching or storing them, and the ground floor
// leans on nothing above it. The store's test kit, snapshot/storetest,
// sits above snapshot: it builds stores with cache and snapshot for every
// package's tests.
var floors = []struct {
	pkg, why  string
	forbidden []string
}{
	{"snapshot/registry", "a source: the store is snapshot's", []string{"index", "cache", "activate", "gc"}},
	{"snapshot/docker", "a source: the store is snapshot's", []string{"index", "cache", "activate", "gc"}},
	{"policy", "judges an image, fetches and stores nothing", []string{"index", "cache", "snapshot", "activate", "gc"}},
	{"internal/fsys", "the ground floor", []string{"index", "cache", "snapshot", "activate", "gc", "policy", "unit"}},
	{"internal/failpoint", "the ground floor", []string{"index", "cache", "snapshot", "activate", "gc", "policy", "unit"}},
	{"internal/journal", "the ground floor", []string{"index", "cache", "snapshot", "activate", "gc", "policy", "unit"}},
	{"internal/pid1", "the ground floor", []string{"index", "cache", "snapshot", "activate", "gc", "policy", "unit"}},
	{"internal/sigstoretest", "a test kit on the ground floor: it signs, it knows nothing of rootswap", []string{"index", "cache", "snapshot", "activate", "gc", "policy", "unit"}},
}

// TestFloors fails for every import of this module's code that runs
// against the data flow, as floors spells it.
func TestFloors(t *testing.T) {
	byName := map[string]listed{}
	for _, p := range goList(t) {
		byName[strings.TrimPrefix(p.ImportPath, module)] = p
	}
	for _, f := range floors {
		p, ok := byName[f.pkg]
		if !ok {
			t.Errorf("floor rule for %s: no such package; fix the rule", f.pkg)
			continue
		}
		for _, imp := range p.Imports {
			name := strings.TrimPrefix(imp, module)
			for _, bad := range f.forbidden {
				if name == bad || strings.HasPrefix(name, bad+"/") {
					t.Errorf("package %s imports %s: %s", f.pkg, name, f.why)
				}
			}
		}
	}
}

type listed struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// TestFences fails for every direct import that crosses a fence, naming
// the package, the import and who may have it.
func TestFences(t *testing.T) {
	pkgs := goList(t)
	used := map[string]bool{} // fenced dependency → imported by an allowed package
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		for imp, where := range p.imports() {
			for _, f := range fences {
				if imp != f.dep && !strings.HasPrefix(imp, f.dep+"/") {
					continue
				}
				if _, ok := f.allowed[name]; ok {
					used[f.dep] = true
					continue
				}
				t.Errorf("fence %s: package %s imports %s (%s); only %s may", f.dep, name, imp, where, strings.Join(keys(f.allowed), ", "))
			}
		}
	}
	// A fence nobody allowed imports is misspelt, or its dependency gone.
	for _, f := range fences {
		if !used[f.dep] {
			t.Errorf("fence %s: no allowed package imports it; fix the rule", f.dep)
		}
	}
}

// imports maps each direct import of p, its tests' included, to where it
// is imported: "code", "tests" or "code and tests".
func (p listed) imports() map[string]string {
	all := map[string]string{}
	for _, imp := range p.Imports {
		all[imp] = "code"
	}
	for _, imp := range append(p.TestImports, p.XTestImports...) {
		switch all[imp] {
		case "":
			all[imp] = "tests"
		case "code":
			all[imp] = "code and tests"
		}
	}
	return all
}

// goList lists every package of the module with its direct imports.
func goList(t *testing.T) []listed {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listed
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list ./... lists no packages")
	}
	return pkgs
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
