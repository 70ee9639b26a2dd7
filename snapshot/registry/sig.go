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

// Signatures reads the image's cosign signatures from its repository
// (through the mirrors that serve tags): each request bounded by the
// registry timeout, each payload verified against the digest the
// signature manifest lists. No signature tag is no signatures.
func (ri *remoteImage) Signatures(ctx context.Context) ([]policy.Signature, error) {
	s := ri.s
	if s.err != nil {
		return nil, s.err
	}
	if ri.manifest == "" {
		return nil, nil
	}
	tag := ri.repo.Tag(SignatureTag(ri.manifest))
	var desc *remote.Descriptor
	err := s.each(ctx, ri.repo, false, true, func(ctx context.Context, repo name.Repository) error {
		var err error
		desc, err = s.puller.Get(ctx, retarget(tag, repo))
		return err
	})
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tag, s.classifyBlob(ctx, ri.repo, err))
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
		err := s.each(ctx, ri.repo, true, true, func(ctx context.Context, repo name.Repository) error {
			bl, err := s.puller.Layer(ctx, repo.Digest(l.Digest.String()))
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
			return nil, fmt.Errorf("%s: payload %s: %w", tag, l.Digest, s.classifyBlob(ctx, ri.repo, err))
		}
		if err := verify(b, l); err != nil {
			return nil, fmt.Errorf("%s: payload: %w", tag, err)
		}
		out = append(out, policy.Signature{Payload: b, Base64: l.Annotations[SignatureAnnotation]})
	}
	return out, nil
}

// notFound reports whether err is a registry's answer that the manifest
// asked for does not exist.
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode))
}
