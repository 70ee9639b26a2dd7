package cache

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// sscanfManifestLine is the parser ParseManifestLine replaced, kept as
// the oracle: both must agree on every line manifestLine writes and
// refuse the same damaged ones.
func sscanfManifestLine(line string) (ManifestEntry, error) {
	var me ManifestEntry
	var kind byte
	var mode uint32
	var mtime int64
	var obj string
	rest := line
	n, err := fmt.Sscanf(line, "%c %o %d %d %d %s %d", &kind, &mode, &me.UID, &me.GID, &mtime, &obj, &me.Size)
	if err != nil || n != 7 {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	for i := 0; i < 7; i++ {
		_, rest, _ = strings.Cut(rest, " ")
	}
	name, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	link := strings.TrimPrefix(rest[len(name):], " ")
	link = strings.TrimSuffix(link, "\n")
	me.Name, _ = strconv.Unquote(name)
	me.Linkname, err = strconv.Unquote(link)
	if err != nil {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	me.Kind, me.Mode, me.ModTime = Kind(kind), mode, time.Unix(0, mtime)
	if obj != "-" {
		if me.Object, err = digest.Parse(obj); err != nil {
			return me, fmt.Errorf("manifest line %q: %w", line, err)
		}
	}
	if me.Kind == KindChar || me.Kind == KindBlock {
		fmt.Sscanf(me.Linkname, "%d:%d", &me.Devmajor, &me.Devminor)
		me.Linkname = ""
	}
	return me, nil
}

func randomEntry(r *rand.Rand) (Entry, digest.Digest) {
	kinds := []Kind{KindDir, KindFile, KindSymlink, KindHardlink, KindChar, KindBlock, KindFIFO}
	e := Entry{Kind: kinds[r.IntN(len(kinds))], Mode: uint32(r.IntN(0o10000)), UID: r.IntN(1 << 31), GID: r.IntN(70000),
		ModTime: time.Unix(0, r.Int64N(1<<62)-1<<61), Name: fmt.Sprintf("d ir/\"f\\%c\x01é%d", 'a'+r.IntN(26), r.IntN(1000))}
	var obj digest.Digest
	switch e.Kind {
	case KindFile:
		e.Size = r.Int64N(1 << 40)
		obj = digest.FromString(e.Name)
	case KindSymlink, KindHardlink:
		e.Linkname = fmt.Sprintf("../t a\"r%d\n", r.IntN(100))
	case KindChar, KindBlock:
		e.Devmajor, e.Devminor = uint32(r.IntN(4096)), uint32(r.IntN(1<<20))
	}
	return e, obj
}

// TestParseManifestLineAgrees: the parser reads back what manifestLine
// writes, exactly as the Sscanf parser did, and refuses what it refused.
func TestParseManifestLineAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		e, obj := randomEntry(r)
		line := strings.TrimSuffix(manifestLine(&e, obj), "\n")
		got, err := ParseManifestLine(line)
		want, werr := sscanfManifestLine(line)
		if err != nil || werr != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("line %q:\n got %+v %v\nwant %+v %v", line, got, err, want, werr)
		}
		if got.Name != e.Name || got.Object != obj || got.Size != e.Size || !got.ModTime.Equal(e.ModTime) {
			t.Fatalf("line %q: read back %+v, wrote %+v", line, got, e)
		}
		// A damaged copy is refused, or read as the Sscanf parser read
		// it (which also took signs and spaces manifestLine never writes).
		b := []byte(line)
		b[r.IntN(len(b))] = "x 0-+\"\\:9"[r.IntN(9)]
		if got, err = ParseManifestLine(string(b)); err != nil {
			continue
		}
		if want, werr = sscanfManifestLine(string(b)); werr != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("damaged line %q:\n got %+v\nwant %+v %v", b, got, want, werr)
		}
	}
}

func BenchmarkParseManifestLine(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	var lines []string
	for range 1000 {
		e, obj := randomEntry(r)
		lines = append(lines, strings.TrimSuffix(manifestLine(&e, obj), "\n"))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseManifestLine(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestValidDigest checks the hand-written check against go-digest's
// Validate, which it replaces on the hot paths.
func TestValidDigest(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, d := range []digest.Digest{
		"sha256:" + digest.Digest(hex),
		"sha256:" + digest.Digest(strings.ToUpper(hex)),
		"sha256:" + digest.Digest(hex[:63]),
		"sha256:" + digest.Digest(hex) + "0",
		"sha256:" + digest.Digest(hex[:63]) + "g",
		"sha256:" + digest.Digest(hex[:63]) + "/",
		"sha256:",
		"sha512:" + digest.Digest(hex+hex),
		"sha512:" + digest.Digest(hex),
		"md5:" + digest.Digest(hex[:32]),
		"SHA256:" + digest.Digest(hex),
		digest.Digest(hex),
		"",
		":",
	} {
		if got, want := ValidDigest(d), d.Validate() == nil; got != want {
			t.Errorf("ValidDigest(%q) = %v, Validate says %v", d, got, want)
		}
	}
}
