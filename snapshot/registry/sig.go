package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/policy"
)

// cosign's legacy signature format: a manifest tagged sha256-HEX.sig in
// the image's repository, one layer per signature, each layer a
// simple-signing payload with its base64 signature in an annotation.
const (
	SimpleSigningType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// A keyless signature's certificate and chain (PEM), and a logged
	// one's Rekor entry with its signed entry timestamp (JSON).
	CertAnnotation  = "dev.sigstore.cosign/certificate"
	ChainAnnotation = "dev.sigstore.cosign/chain"
	RekorAnnotation = "dev.sigstore.cosign/bundle"
)

// Bounds on what a signature manifest may make rootswap read: payloads
// are a few hundred bytes.
const (
	maxSignatures  = 64
	maxPayload     = 64 << 10
	maxSigManifest = 4 << 20
)

// SignatureTag is the tag cosign attaches manifest m's legacy signatures
// under.
func SignatureTag(m digest.Digest) string {
	return m.Algorithm().String() + "-" + m.Encoded() + ".sig"
}

// Sigstore bundles as cosign v3 attaches them (cosign's
// specs/BUNDLE_SPEC.md): an OCI 1.1 artifact manifest whose subject is
// the image's manifest, whose artifactType and one layer are the bundle's
// media type, listed by the registry's referrers API or, where the
// registry lacks it, in an OCI index tagged sha256-HEX (the referrers tag
// schema of the OCI distribution spec).
const (
	BundleTypePrefix = "application/vnd.dev.sigstore.bundle"
	maxBundle        = 1 << 20
)

// Signatures reads the image's cosign signatures from its repository:
// the legacy ones under the signature tag, then the Sigstore bundles
// attached as referrers, each from the first of the mirrors that serve
// tags and the repository itself that has some, each request bounded by
// the registry timeout, each payload and bundle bounded and verified
// against the digest its manifest lists. None anywhere is no signatures.
func (ri *remoteImage) Signatures(ctx context.Context) ([]policy.Signature, error) {
	if ri.s.err != nil {
		return nil, ri.s.err
	}
	if ri.manifest == "" {
		return nil, nil
	}
	legacy, err := ri.legacySignatures(ctx)
	if err != nil {
		return nil, err
	}
	bundles, err := ri.bundles(ctx)
	if err != nil {
		return nil, err
	}
	return append(legacy, bundles...), nil
}

// firstWith asks each endpoint in turn (the mirrors that serve tags, then
// the repository) with has, which reports whether the endpoint has what
// is sought, until one has it: a mirror that lacks it (a mirror of the
// images alone) is no failing mirror, the next endpoint is asked; a
// mirror that fails is skipped with a warning. It returns the endpoint
// that had it, or ok false.
func (ri *remoteImage) firstWith(ctx context.Context, what string, has func(ctx context.Context, ep name.Repository) (bool, error)) (name.Repository, bool, error) {
	s := ri.s
	eps := append(s.mirrors.of(ri.repo, false), ri.repo)
	for i, ep := range eps {
		if i < len(eps)-1 && s.failed(ep) != nil {
			continue // warned of when it failed
		}
		var found bool
		err := s.once(ctx, ep, func(ctx context.Context) error {
			var err error
			found, err = has(ctx, ep)
			return err
		})
		switch {
		case err == nil && found:
			return ep, true, nil
		case err == nil || notFound(err):
			continue
		case i < len(eps)-1 && ctx.Err() == nil:
			s.opt.Log.Warn("registry mirror failed to answer for signatures; asking the next", "mirror", ep.Name(), "err", brief(err, s.opt.Timeout))
			continue
		default:
			return name.Repository{}, false, fmt.Errorf("%s: %w", what, s.classifyBlob(ctx, ep, err))
		}
	}
	return name.Repository{}, false, nil
}

// legacySignatures reads the signatures under cosign's signature tag.
func (ri *remoteImage) legacySignatures(ctx context.Context) ([]policy.Signature, error) {
	s := ri.s
	tag := ri.repo.Tag(SignatureTag(ri.manifest))
	var desc *remote.Descriptor
	from, ok, err := ri.firstWith(ctx, tag.String(), func(ctx context.Context, ep name.Repository) (bool, error) {
		var err error
		desc, err = s.puller.Get(ctx, ep.Tag(tag.TagStr()))
		return err == nil, err
	})
	if err != nil || !ok {
		return nil, err
	}
	if len(desc.Manifest) > maxSigManifest {
		return nil, fmt.Errorf("%s: manifest of %d bytes", tag, len(desc.Manifest))
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", tag, err)
	}
	var out []policy.Signature
	for _, l := range m.Layers {
		if string(l.MediaType) != SimpleSigningType {
			continue
		}
		if len(out) == maxSignatures {
			return nil, fmt.Errorf("%s: more than %d signatures", tag, maxSignatures)
		}
		b, err := ri.smallBlob(ctx, from, l, maxPayload)
		if err != nil {
			return nil, fmt.Errorf("%s: payload %s: %w", tag, l.Digest, err)
		}
		sig := policy.Signature{Payload: b, Base64: l.Annotations[SignatureAnnotation], Cert: l.Annotations[CertAnnotation], Chain: l.Annotations[ChainAnnotation]}
		if r, ok := l.Annotations[RekorAnnotation]; ok {
			sig.Rekor = []byte(r)
		}
		out = append(out, sig)
	}
	return out, nil
}

// bundles reads the Sigstore bundles attached to the image as referrers:
// the referrers API first, the referrers tag where the registry answers
// that it has no such API (go-containerregistry's fallback on 404).
func (ri *remoteImage) bundles(ctx context.Context) ([]policy.Signature, error) {
	s := ri.s
	what := "referrers of " + ri.manifest.String()
	var found []v1.Descriptor
	from, ok, err := ri.firstWith(ctx, what, func(ctx context.Context, ep name.Repository) (bool, error) {
		idx, err := remote.Referrers(ep.Digest(ri.manifest.String()), remote.Reuse(s.puller), remote.WithContext(ctx))
		if err != nil {
			return false, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return false, err
		}
		found = found[:0]
		for _, d := range im.Manifests {
			if maybeBundle(d) {
				found = append(found, d)
			}
		}
		return len(found) > 0, nil
	})
	if err != nil || !ok {
		return nil, err
	}
	if len(found) > maxSignatures {
		return nil, fmt.Errorf("%s: more than %d bundles", what, maxSignatures)
	}
	var out []policy.Signature
	for _, d := range found {
		where := fmt.Sprintf("%s: bundle manifest %s", what, d.Digest)
		if d.Size < 0 || d.Size > maxSigManifest {
			return nil, fmt.Errorf("%s: of %d bytes (at most %d)", where, d.Size, maxSigManifest)
		}
		if _, err := digest.Parse(d.Digest.String()); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var desc *remote.Descriptor
		err := s.once(ctx, from, func(ctx context.Context) error {
			var err error
			desc, err = s.puller.Get(ctx, from.Digest(d.Digest.String())) // checks the digest
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, s.classifyBlob(ctx, from, err))
		}
		if len(desc.Manifest) > maxSigManifest {
			return nil, fmt.Errorf("%s: of %d bytes", where, len(desc.Manifest))
		}
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		for _, l := range m.Layers {
			if !strings.HasPrefix(string(l.MediaType), BundleTypePrefix) {
				continue
			}
			b, err := ri.smallBlob(ctx, from, l, maxBundle)
			if err != nil {
				return nil, fmt.Errorf("%s: bundle %s: %w", where, l.Digest, err)
			}
			out = append(out, policy.Signature{Bundle: b})
		}
	}
	return out, nil
}

// maybeBundle reports whether referrer d may be a Sigstore bundle: its
// artifactType says so, or says nothing telling, as in a referrers tag
// some writers fill with the config's media type (the empty one) or
// nothing; those manifests are read, and only their bundle layers kept.
func maybeBundle(d v1.Descriptor) bool {
	return strings.HasPrefix(d.ArtifactType, BundleTypePrefix) || d.ArtifactType == "" || d.ArtifactType == emptyConfigType
}

// emptyConfigType is the OCI empty descriptor's media type, the config of
// an artifact manifest such as a bundle's.
const emptyConfigType = "application/vnd.oci.empty.v1+json"

// smallBlob reads blob l of endpoint from, at most max bytes, verified
// against its descriptor.
func (ri *remoteImage) smallBlob(ctx context.Context, from name.Repository, l v1.Descriptor, max int64) ([]byte, error) {
	s := ri.s
	if l.Size < 0 || l.Size > max {
		return nil, fmt.Errorf("of %d bytes (at most %d)", l.Size, max)
	}
	if _, err := digest.Parse(l.Digest.String()); err != nil {
		return nil, fmt.Errorf("digest %q: %w", l.Digest, err)
	}
	var b []byte
	err := s.once(ctx, from, func(ctx context.Context) error {
		bl, err := s.puller.Layer(ctx, from.Digest(l.Digest.String()))
		if err != nil {
			return err
		}
		rc, err := bl.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err = io.ReadAll(io.LimitReader(rc, l.Size+1))
		return err
	})
	if err != nil {
		return nil, s.classifyBlob(ctx, from, err)
	}
	if err := verify(b, l); err != nil {
		return nil, err
	}
	return b, nil
}

// once runs f against endpoint ep alone, bounded by the registry
// timeout; an endpoint that failed earlier in the command answers with
// that failure, and one found unreachable now is not asked again (as
// each does, without its walk over the mirrors).
func (s *Source) once(ctx context.Context, ep name.Repository, f func(context.Context) error) error {
	if err := s.failed(ep); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	err := f(tctx)
	if err != nil && tctx.Err() != nil && ctx.Err() == nil && !errors.Is(err, errTimeout) {
		err = fmt.Errorf("%w: no answer within %s: %w", errTimeout, s.opt.Timeout, err)
	}
	if err != nil && ctx.Err() == nil && unreachable(err) {
		s.fail(ep, err)
	}
	return err
}

// notFound reports whether err is a registry's answer that the manifest
// asked for does not exist.
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode))
}
