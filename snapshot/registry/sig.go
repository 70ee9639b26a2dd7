package registry

import (
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

// Signatures reads the image's cosign signatures from its repository:
// from the first of the mirrors that serve tags and the repository itself
// that has the signature tag, each request bounded by the registry
// timeout, each payload bounded and verified against the digest the
// signature manifest lists. No signature tag anywhere is no signatures.
func (ri *remoteImage) Signatures(ctx context.Context) ([]policy.Signature, error) {
	s := ri.s
	if s.err != nil {
		return nil, s.err
	}
	if ri.manifest == "" {
		return nil, nil
	}
	tag := ri.repo.Tag(SignatureTag(ri.manifest))
	// The first endpoint that has the tag serves the signatures and their
	// payloads: a mirror that lacks it (a mirror of the images alone) is
	// no failing mirror, the next endpoint is asked.
	eps := append(s.mirrors.of(ri.repo, false), ri.repo)
	var desc *remote.Descriptor
	var from name.Repository
	for i, ep := range eps {
		err := s.once(ctx, ep, func(ctx context.Context) error {
			var err error
			desc, err = s.puller.Get(ctx, ep.Tag(tag.TagStr()))
			return err
		})
		switch {
		case err == nil:
			from = ep
		case notFound(err):
			continue
		case i < len(eps)-1 && ctx.Err() == nil:
			s.opt.Log.Warn("registry mirror failed to answer for signatures; asking the next", "mirror", ep.Name(), "err", brief(err, s.opt.Timeout))
			continue
		default:
			return nil, fmt.Errorf("%s: %w", tag, s.classifyBlob(ctx, ep, err))
		}
		break
	}
	if desc == nil {
		return nil, nil
	}
	if len(desc.Manifest) > maxSigManifest {
		return nil, fmt.Errorf("%s: manifest of %d bytes", tag, len(desc.Manifest))
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
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
		if l.Size < 0 || l.Size > maxPayload {
			return nil, fmt.Errorf("%s: payload %s of %d bytes (at most %d)", tag, l.Digest, l.Size, maxPayload)
		}
		if _, err := digest.Parse(l.Digest.String()); err != nil {
			return nil, fmt.Errorf("%s: payload digest %q: %w", tag, l.Digest, err)
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
			return nil, fmt.Errorf("%s: payload %s: %w", tag, l.Digest, s.classifyBlob(ctx, from, err))
		}
		if err := verify(b, l); err != nil {
			return nil, fmt.Errorf("%s: payload: %w", tag, err)
		}
		out = append(out, policy.Signature{Payload: b, Base64: l.Annotations[SignatureAnnotation]})
	}
	return out, nil
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
