package registry

import (
	"context"
	"errors"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// fetchBlob opens blob of repo from its first mirror that serves it, or
// from repo. verified says whether the stream checks the blob's digest
// at its end: the client does for one response; a stream that may go on
// from another endpoint (see resumed) is left to the layer to hash.
func (s *Source) fetchBlob(ctx context.Context, repo name.Repository, blob digest.Digest) (io.ReadCloser, bool, error) {
	rc, ep, err := s.openBlob(ctx, repo, blob)
	if err != nil {
		return nil, false, s.classifyBlob(ctx, repo, err)
	}
	if ep.Name() == repo.Name() {
		return rc, true, nil
	}
	return &resumed{s: s, ctx: ctx, repo: repo, blob: blob, rc: rc, ep: ep}, false, nil
}

// openBlob is the response of the first endpoint (a mirror of repo, or
// repo) that answers a GET of blob, and that endpoint.
func (s *Source) openBlob(ctx context.Context, repo name.Repository, blob digest.Digest) (io.ReadCloser, name.Repository, error) {
	var rc io.ReadCloser
	var from name.Repository
	err := s.each(ctx, repo, true, false, func(ctx context.Context, ep name.Repository) error {
		l, err := s.puller.Layer(ctx, ep.Digest(blob.String()))
		if err != nil {
			return err
		}
		rc, err = l.Compressed()
		from = ep
		return err
	})
	return rc, from, err
}

// resumed is a blob streamed from a mirror that, if the mirror stops
// sending or drops the connection mid-blob, goes on from the next
// endpoint: the mirror is skipped for the rest of the command (one
// warning, as for any mirror failure), the blob is asked of the next one
// and the bytes already read are skipped. Whatever it splices, the layer
// hashes the whole stream against the blob's digest.
type resumed struct {
	s    *Source
	ctx  context.Context
	repo name.Repository // the upstream
	blob digest.Digest
	rc   io.ReadCloser
	ep   name.Repository // where rc comes from
	n    int64           // bytes read so far
}

func (r *resumed) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.n += int64(n)
	if err == nil || err == io.EOF || r.ctx.Err() != nil || r.ep.Name() == r.repo.Name() ||
		!(unreachable(err) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return n, err
	}
	r.s.mirrorFailed(r.ep, err)
	rc, ep, oerr := r.s.openBlob(r.ctx, r.repo, r.blob)
	if oerr != nil {
		return n, err
	}
	if _, derr := io.CopyN(io.Discard, rc, r.n); derr != nil {
		rc.Close()
		return n, err
	}
	r.rc.Close()
	r.rc, r.ep = rc, ep
	return n, nil
}

func (r *resumed) Close() error { return r.rc.Close() }
