package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestPullRefusedKeepsRecord: a `prepare --pull` that refuses the image a
// moved tag names (a blob that is not its digest, a layer that escapes
// its tree) must leave the reference recorded where it was. A plain
// `prepare` afterwards then stays offline and finds the machine's tree
// current, and once the registry is down, plain `prepare` still works and
// `--pull` starts from cache. Recording the tag at the refused digest
// would send plain `prepare` to the network for an image it cannot have.
func TestPullRefusedKeepsRecord(t *testing.T) {
	needIntegration(t)
	cases := []struct {
		name    string
		layer   []tarEntry
		damage  func(t *testing.T, reg *registry, l rawLayer)
		mention func(bad rawLayer) string // in the refusal
	}{
		{name: "blob digest mismatch",
			layer: []tarEntry{fileEnt("payload", strings.Repeat("v2\n", 100))},
			damage: func(t *testing.T, reg *registry, l rawLayer) {
				evil := storedGzip(t, layerTar(t, fileEnt("payload", strings.Repeat("v3\n", 100)))).blob
				if len(evil) != len(l.blob) {
					t.Fatalf("the evil blob has %d bytes, the real one %d", len(evil), len(l.blob))
				}
				overwriteBlob(t, reg, l.blob, evil)
			},
			mention: func(bad rawLayer) string { return digest.FromBytes(bad.blob).String() }},
		{name: "layer escaping its tree",
			layer:   []tarEntry{fileEnt("../escape", "v2\n")},
			mention: func(rawLayer) string { return "escape" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := startRegistry(t, registryOpts{})
			s := newStore(t)
			ref, base, v1 := prepareFirst(t, r, s, "rootswap-test/refused:stable")

			// The tag moves to an image rootswap must refuse.
			bad := storedGzip(t, layerTar(t, c.layer...))
			cfg2 := imageConfig(t, base.diffID, bad.diffID)
			pushRaw(t, r, "rootswap-test/refused:stable", cfg2, []rawLayer{base, bad}, nil)
			if c.damage != nil {
				c.damage(t, r, bad)
			}
			res := s.fail(1, []string{"rootswap-test/refused", c.mention(bad)}, "prepare", "--pull", "m", ref)
			t.Logf("refused pull: %s", strings.TrimSpace(res.stderr))
			if ms := s.machines(); len(ms) != 1 || ms[0].Digest != v1 {
				t.Fatalf("after the refused pull the machines are %+v, want m at %s", ms, v1)
			}
			plainPrepareKeeps(t, r, s, ref, v1)
			// --pull with the registry down starts from cache too, with
			// a warning.
			if out := s.ok("prepare", "--pull", "m", ref); !strings.Contains(out, v1) || !strings.Contains(out, "unreachable") {
				t.Errorf("prepare --pull with the registry down: %q, want %s from cache", out, v1)
			}
		})
	}
}

// TestPullNoSpaceKeepsRecord: the same sequence when the refusal is a
// full disk: a `prepare --pull` of a moved tag that cannot store the new
// image leaves the tag recorded at the machine's tree, so a plain
// `prepare` stays offline (it writes nothing), with the registry up or
// down.
func TestPullNoSpaceKeepsRecord(t *testing.T) {
	needIntegration(t)
	needLoop(t)
	r := startRegistry(t, registryOpts{})
	img := filepath.Join(t.TempDir(), "fs.img")
	makeFS(t, img)
	l := mountFS(t, img)
	defer l.unmount()
	s := storeOn(t, filepath.Join(l.dir, "store"))
	ref, base, v1 := prepareFirst(t, r, s, "rootswap-test/nospace:stable")

	big := storedGzip(t, layerTar(t, fileEnt("payload", strings.Repeat("v2 payload\n", 1<<16))))
	cfg2 := imageConfig(t, base.diffID, big.diffID)
	pushRaw(t, r, "rootswap-test/nospace:stable", cfg2, []rawLayer{base, big}, nil)
	l.fill(t, 0)
	res := s.run("prepare", "--pull", "m", ref)
	oneLineNoSpace(t, "prepare --pull on a full disk", res)
	if got := s.linked("m"); got != v1 {
		t.Fatalf("after the refused pull m links to %s, want %s", got, v1)
	}
	plainPrepareKeeps(t, r, s, ref, v1)
	l.unfill(t)
	s.check()
}

// prepareFirst pushes an image of one layer (etc/version v1) to r as tag
// (repo:tag), prepares machine m from it with --pull, and returns the
// image argument, its layer and its digest: the start of the sequences
// above.
func prepareFirst(t *testing.T, r *registry, s *store, tag string) (ref string, base rawLayer, v1 string) {
	t.Helper()
	ref = "docker://" + r.Addr() + "/" + tag
	base = storedGzip(t, layerTar(t, dirEnt("etc/"), fileEnt("etc/version", "v1\n")))
	cfg := imageConfig(t, base.diffID)
	pushRaw(t, r, tag, cfg, []rawLayer{base}, nil)
	v1 = digest.FromBytes(cfg).String()
	if out := s.ok("prepare", "--pull", "m", ref); !strings.Contains(out, v1) {
		t.Fatalf("first prepare: %q, want %s", out, v1)
	}
	return ref, base, v1
}

// plainPrepareKeeps checks what follows a refused `prepare --pull` of ref
// for machine m, which runs v1: a plain `prepare` stays offline (no
// registry request) and finds the machine's tree current, and so it does
// once the registry is down. It leaves r stopped.
func plainPrepareKeeps(t *testing.T, r *registry, s *store, ref, v1 string) {
	t.Helper()
	before := r.Requests()
	if out := s.ok("prepare", "m", ref); !strings.Contains(out, v1) || !strings.Contains(out, "unchanged") {
		t.Errorf("plain prepare after the refused pull: %q, want %s unchanged", out, v1)
	}
	if n := r.Requests() - before; n != 0 {
		t.Errorf("plain prepare after the refused pull made %d registry requests, want none", n)
	}
	r.Stop()
	if out := s.ok("prepare", "m", ref); !strings.Contains(out, v1) || !strings.Contains(out, "unchanged") {
		t.Errorf("plain prepare with the registry down: %q, want %s unchanged", out, v1)
	}
}
