package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// DefaultTimeout bounds the round trips that decide what a ref names.
const DefaultTimeout = 10 * time.Second

// maxConfig bounds an image config's size: configs are kilobytes.
const maxConfig = 16 << 20

// Options tune a Source; the zero value is usable.
type Options struct {
	// Keychain finds credentials per registry; nil means
	// authn.DefaultKeychain (see the README's "Image sources").
	Keychain authn.Keychain
	// Timeout bounds every wait on the network: each manifest and config
	// round trip (per mirror tried), the connection, TLS handshake and
	// response headers of every request, and each read of a blob's body
	// (a body may take as long as it likes while bytes keep coming, but
	// no byte for Timeout is a registry that is unreachable); 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// Platform is the platform an index's manifest is picked for,
	// "os/arch[/variant]"; "" means linux/GOARCH.
	Platform string
	// MirrorsFile is a registries.conf naming mirrors; "" means
	// $ROOTSWAP_REGISTRIES_CONF, else /etc/rootswap/registries.conf. A
	// missing file means no mirrors.
	MirrorsFile string
	// Refs remembers resolved refs across processes; nil remembers none,
	// so every Resolve asks the registry.
	Refs RefCache
	// Transport replaces the HTTP transport (tests); nil means
	// go-containerregistry's default with Timeout on connecting, the TLS
	// handshake and response headers. Timeout bounds either.
	Transport http.RoundTripper
	// Log receives a warning per mirror that fails; nil discards them.
	Log *slog.Logger
	// TempDir takes the decompressed copy of a compressed
	// docker-archive: or oci-archive: file (unlinked at once); "" means
	// os.TempDir().
	TempDir string
}

// Source is a registry as a snapshot.Source, for docker://HOST/REPO:TAG
// and docker://HOST/REPO@sha256:… refs. It is safe for concurrent use.
type Source struct {
	opt      Options
	platform v1.Platform
	mirrors  *mirrors
	puller   *remote.Puller
	err      error // a bad option, returned by every call

	mu   sync.Mutex
	down map[string]error // endpoint (repository name) → its failure, not asked again
}

var _ snapshot.Source = (*Source)(nil)

// New returns a registry source. An invalid option (a bad platform or
// mirrors file) is the error of every call.
func New(opt Options) *Source {
	s := &Source{opt: opt, down: map[string]error{}}
	if s.opt.Timeout <= 0 {
		s.opt.Timeout = DefaultTimeout
	}
	if s.opt.Keychain == nil {
		s.opt.Keychain = authn.DefaultKeychain
	}
	if s.opt.Log == nil {
		s.opt.Log = slog.New(slog.DiscardHandler)
	}
	s.platform, s.err = parsePlatform(opt.Platform)
	if s.err == nil {
		s.mirrors, s.err = loadMirrors(opt.MirrorsFile)
	}
	t := opt.Transport
	if t == nil {
		t = defaultTransport(s.opt.Timeout)
	}
	if s.err == nil {
		s.puller, s.err = remote.NewPuller(
			remote.WithAuthFromKeychain(s.opt.Keychain),
			remote.WithTransport(&refusals{next: &boundTransport{next: t, d: s.opt.Timeout}}),
			remote.WithRetryBackoff(retryBackoff(s.opt.Timeout)),
			remote.WithRetryStatusCodes(retryStatus...),
			remote.WithRetryPredicate(retryable),
			remote.WithUserAgent("rootswap"),
		)
	}
	return s
}

func parsePlatform(p string) (v1.Platform, error) {
	if p == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	pp, err := v1.ParsePlatform(p)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("platform %q: %w", p, err)
	}
	return *pp, nil
}

// String is what a user calls this source in messages.
func (s *Source) String() string { return "registry" }

// parse turns a docker reference into go-containerregistry's, with its
// registry as the mirrors configuration names it upstream.
func (s *Source) parse(ref snapshot.Ref) (name.Reference, error) {
	if s.err != nil {
		return nil, s.err
	}
	if ref.Transport != snapshot.Docker {
		return nil, fmt.Errorf("image %s: not a docker:// reference", ref)
	}
	r, err := name.ParseReference(ref.Name)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if r, err = s.mirrors.upstream(r); err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return r, nil
}

// Resolve returns the image ref names: its digest (the config's) and its
// manifest's. A ref the ref cache knows costs no network at all, whatever
// the registry says now (Pull is what asks again): the image's manifest
// and config are read by digest when its Content is first asked for.
// Otherwise Resolve reads the manifest (through an index, the one for the
// platform) and the config and verifies them; the image is recorded once
// stored (snapshot.RecordRef).
func (s *Source) Resolve(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return snapshot.Image{}, err
	}
	if rec, ok, err := s.lookup(ref.String()); err != nil {
		return snapshot.Image{}, err
	} else if ok {
		return s.recorded(ref, r, rec), nil
	}
	return s.fetch(ctx, ref, r)
}

// Pull asks the registry what ref names now. For a digest ref already
// recorded it asks nothing (a digest names one manifest forever). For a
// tag it makes one manifest HEAD and, if the tag has moved (or was never
// recorded), reads the new manifest by the digest the HEAD gave and its
// config; the image is recorded once stored (snapshot.RecordRef), so a
// pull refused on the way in leaves the record as it was. Blobs are
// fetched by the layers' streams, not here.
func (s *Source) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return snapshot.Image{}, err
	}
	rec, ok, err := s.lookup(ref.String())
	if err != nil {
		return snapshot.Image{}, err
	}
	_, byDigest := r.(name.Digest)
	switch {
	case ok && byDigest:
		return s.recorded(ref, r, rec), nil
	case ok:
		var head *v1.Descriptor
		err := s.each(ctx, r.Context(), false, true, func(ctx context.Context, repo name.Repository) error {
			var err error
			head, err = s.puller.Head(ctx, retarget(r, repo))
			return err
		})
		if err == nil {
			if head.Digest.String() == rec.manifest.String() {
				return s.recorded(ref, r, rec), nil
			}
			// Read what the HEAD named, by digest: verified, and the same
			// manifest even if the tag moves again meanwhile.
			r = r.Context().Digest(head.Digest.String())
		} else if c := s.classify(ctx, ref.String(), r.Context(), err); errors.Is(c, snapshot.ErrUnreachable) || errors.Is(c, snapshot.ErrImageNotFound) || errors.Is(c, errAuth) {
			return snapshot.Image{}, c
		}
		// Any other HEAD failure (a registry that sends no
		// Docker-Content-Digest) falls back to a GET of the tag.
	}
	return s.fetch(ctx, ref, r)
}

// remoteImage is an image in a registry as Content: its repository (r's,
// upstream of any mirror), the manifest digest its ref named and its
// image digest, and the image once read.
type remoteImage struct {
	s        *Source
	ref      snapshot.Ref
	repo     name.Repository
	manifest digest.Digest
	config   digest.Digest

	mu  sync.Mutex
	img *image // nil until read
}

// recorded is the image the ref cache's record rec says ref names; it is
// read from the registry only when its content is asked for.
func (s *Source) recorded(ref snapshot.Ref, r name.Reference, rec record) snapshot.Image {
	ri := &remoteImage{s: s, ref: ref, repo: r.Context(), manifest: rec.manifest, config: rec.config}
	return snapshot.Image{Ref: ref, Digest: rec.config, Manifest: rec.manifest, Content: ri}
}

// read returns the image, reading its manifest by digest (and through an
// index, the platform's) and its config the first time; the config must
// be the one the image was resolved to.
func (ri *remoteImage) read(ctx context.Context) (*image, error) {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ri.img != nil {
		return ri.img, nil
	}
	var top digest.Digest
	img, err := ri.s.readTop(ctx, ri.ref.String(), ri.repo.Digest(ri.manifest.String()), &top)
	if err != nil {
		return nil, err
	}
	if img.config != ri.config {
		return nil, fmt.Errorf("image %s: manifest %s now names config %s, not %s", ri.ref, ri.manifest, img.config, ri.config)
	}
	ri.img = img
	return img, nil
}

// Config returns the image's config, as verified against its digest.
func (ri *remoteImage) Config(ctx context.Context) (snapshot.Config, error) {
	img, err := ri.read(ctx)
	if err != nil {
		return snapshot.Config{}, err
	}
	return img.ociConfig(ri.ref)
}

// Layers returns the image's layers, lowest first: each with its diffID
// from the config and its blob from the manifest.
func (ri *remoteImage) Layers(ctx context.Context) ([]snapshot.Layer, error) {
	if err := ri.s.err; err != nil {
		return nil, err
	}
	img, err := ri.read(ctx)
	if err != nil {
		return nil, err
	}
	return ri.s.layers(img, ri.repo), nil
}

func (s *Source) layers(img *image, repo name.Repository) []snapshot.Layer {
	ls := make([]snapshot.Layer, len(img.diffIDs))
	for i, desc := range img.manifest.Layers {
		blob := digest.Digest(desc.Digest.String())
		ls[i] = &layer{
			diffID: img.diffIDs[i],
			blob:   blob,
			size:   desc.Size,
			name:   "blob " + blob.String(), // the importer names the layer
			fetch: func(ctx context.Context) (io.ReadCloser, bool, error) {
				return s.fetchBlob(ctx, repo, blob)
			},
		}
	}
	return ls
}

// record is what the ref cache says a ref names.
type record struct{ config, manifest digest.Digest }

func (s *Source) lookup(ref string) (record, bool, error) {
	if s.opt.Refs == nil {
		return record{}, false, nil
	}
	d, m, ok, err := s.opt.Refs.LookupRef(ref)
	if err != nil {
		return record{}, false, fmt.Errorf("image %s: ref cache: %w", ref, err)
	}
	if ok && (d.Validate() != nil || m.Validate() != nil) {
		return record{}, false, fmt.Errorf("image %s: ref cache holds digests %q, %q", ref, d, m)
	}
	return record{config: d, manifest: m}, ok, nil
}

// fetch reads the image r names (r may be the digest a HEAD of ref gave).
// The image it returns asks to be recorded under ref (Image.Record): the
// importer records it once its tree is stored, never this source.
func (s *Source) fetch(ctx context.Context, ref snapshot.Ref, r name.Reference) (snapshot.Image, error) {
	var top digest.Digest
	img, err := s.readTop(ctx, ref.String(), r, &top)
	if err != nil {
		return snapshot.Image{}, err
	}
	ri := &remoteImage{s: s, ref: ref, repo: r.Context(), manifest: top, config: img.config, img: img}
	return snapshot.Image{Ref: ref, Digest: img.config, Manifest: top, Record: s.opt.Refs != nil, Content: ri}, nil
}

// readTop reads and verifies the manifest r names (through an index, the
// platform's) and its config; *top is the digest of what r named.
func (s *Source) readTop(ctx context.Context, ref string, r name.Reference, top *digest.Digest) (*image, error) {
	_, byDigest := r.(name.Digest)
	var desc *remote.Descriptor
	err := s.each(ctx, r.Context(), byDigest, true, func(ctx context.Context, repo name.Repository) error {
		var err error
		desc, err = s.puller.Get(ctx, retarget(r, repo)) // checks a digest ref's digest
		return err
	})
	if err != nil {
		return nil, s.classify(ctx, ref, r.Context(), err)
	}
	*top = digest.Digest(desc.Digest.String())
	mb := desc.Manifest
	if isIndex(desc.MediaType, mb) {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(mb))
		if err != nil {
			return nil, fmt.Errorf("image %s: index %s: %w", ref, *top, err)
		}
		child, err := pickPlatform(idx, s.platform)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		cr := r.Context().Digest(child.Digest.String())
		var cd *remote.Descriptor
		err = s.each(ctx, r.Context(), true, true, func(ctx context.Context, repo name.Repository) error {
			var err error
			cd, err = s.puller.Get(ctx, retarget(cr, repo))
			return err
		})
		if err != nil {
			return nil, s.classify(ctx, ref, r.Context(), err)
		}
		if err := verify(cd.Manifest, child); err != nil {
			return nil, fmt.Errorf("image %s: manifest: %w", ref, err)
		}
		mb = cd.Manifest
	}
	img, err := parseImage(mb, func(cd v1.Descriptor) ([]byte, error) {
		if cd.Size > maxConfig {
			return nil, fmt.Errorf("config of %d bytes is larger than %d", cd.Size, maxConfig)
		}
		var b []byte
		err := s.each(ctx, r.Context(), true, true, func(ctx context.Context, repo name.Repository) error {
			l, err := s.puller.Layer(ctx, repo.Digest(cd.Digest.String()))
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			b, err = io.ReadAll(io.LimitReader(rc, cd.Size+1))
			return err
		})
		if err != nil {
			return nil, s.classifyBlob(ctx, r.Context(), err)
		}
		return b, nil
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return img, nil
}

// retarget is r in repository repo (a mirror's).
func retarget(r name.Reference, repo name.Repository) name.Reference {
	if d, ok := r.(name.Digest); ok {
		return repo.Digest(d.DigestStr())
	}
	return repo.Tag(r.Identifier())
}

// each runs f against each mirror of repo that serves this kind of
// request, then against repo itself, until one succeeds; bounded gives
// each try its own Timeout. It returns the last error.
//
// A Source lives for one command, and asks nothing twice of an endpoint
// that failed it: a mirror that fails once (with one warning) is skipped
// for the rest of the command, and a registry found unreachable answers
// every later request with that first error, so that a hung registry
// costs one timeout per command, not one per request.
func (s *Source) each(ctx context.Context, repo name.Repository, byDigest, bounded bool, f func(context.Context, name.Repository) error) error {
	eps := append(s.mirrors.of(repo, byDigest), repo)
	var err error
	for i, ep := range eps {
		mirror := i < len(eps)-1
		if err = s.failed(ep); err != nil {
			continue
		}
		tctx, cancel := ctx, context.CancelFunc(func() {})
		if bounded {
			tctx, cancel = context.WithTimeout(ctx, s.opt.Timeout)
		}
		err = f(tctx, ep)
		if err != nil && bounded && tctx.Err() != nil && ctx.Err() == nil && !errors.Is(err, errTimeout) {
			err = fmt.Errorf("%w: no answer within %s: %w", errTimeout, s.opt.Timeout, err)
		}
		cancel()
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case mirror:
			s.mirrorFailed(ep, err)
		case unreachable(err):
			s.fail(ep, err)
		}
	}
	return err
}

// mirrorFailed records that mirror ep failed with err, and warns the
// first time.
func (s *Source) mirrorFailed(ep name.Repository, err error) {
	if s.fail(ep, err) {
		s.opt.Log.Warn("registry mirror failed; skipping it for this command", "mirror", ep.Name(), "err", brief(err, s.opt.Timeout))
	}
}

// failed returns the error an endpoint failed with earlier in this
// command, or nil.
func (s *Source) failed(ep name.Repository) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down[ep.Name()]
}

// fail records that endpoint ep failed with err, and reports whether it
// is the first failure recorded for it.
func (s *Source) fail(ep name.Repository, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.down[ep.Name()]; ok {
		return false
	}
	s.down[ep.Name()] = err
	return true
}

var (
	errTimeout = errors.New("timeout")
	errAuth    = errors.New("authentication failed")
)

// classify maps a failure to ask the registry about ref to the conditions
// callers branch on.
func (s *Source) classify(ctx context.Context, ref string, repo name.Repository, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("image %s: %w", ref, ctx.Err())
	}
	err = s.plainHTTPHint(repo.RegistryStr(), err)
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case isAuth(te):
			return s.authError(repo, te)
		case te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return fmt.Errorf("image %s: %w: %s", ref, snapshot.ErrImageNotFound, brief(err, s.opt.Timeout))
		}
	}
	if unreachable(err) {
		return fmt.Errorf("image %s: %w: %s", ref, snapshot.ErrUnreachable, brief(err, s.opt.Timeout))
	}
	if te != nil {
		return fmt.Errorf("image %s: %s", ref, brief(err, s.opt.Timeout))
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// classifyBlob is classify for a blob: a missing blob is no missing image
// but a broken registry.
func (s *Source) classifyBlob(ctx context.Context, repo name.Repository, err error) error {
	err = s.plainHTTPHint(repo.RegistryStr(), err)
	var te *transport.Error
	isTE := errors.As(err, &te)
	switch {
	case ctx.Err() != nil:
		return err
	case isTE && isAuth(te):
		return s.authError(repo, te)
	case unreachable(err):
		return fmt.Errorf("%w: %s", snapshot.ErrUnreachable, brief(err, s.opt.Timeout))
	case isTE:
		return errors.New(brief(err, s.opt.Timeout))
	}
	return err
}

func (s *Source) authError(repo name.Repository, te *transport.Error) error {
	return fmt.Errorf("registry %s: %w for %s: %s", repo.RegistryStr(), errAuth, repo.RepositoryStr(), brief(te, s.opt.Timeout))
}

func isAuth(te *transport.Error) bool {
	return te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
		hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode)
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// unreachable reports whether err means the registry could not be asked:
// no connection, no name, no answer in time, or a server error (a proxy
// or registry that is down answers 502, 503, 504).
func unreachable(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var op *net.OpError
	var dns *net.DNSError
	return errors.Is(err, errTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &op) || errors.As(err, &dns) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
