package registry

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// maxZstdWindow bounds the memory a zstd layer may make the decoder
// allocate: zstd -19 uses 8 MiB windows and --long=27 128 MiB; a layer
// asking for more is refused rather than trusted.
const maxZstdWindow = 128 << 20

// layer is one layer of a resolved image: its diffID from the config, its
// blob from the manifest, and how to fetch the blob.
type layer struct {
	diffID digest.Digest
	blob   digest.Digest // "" when the source does not name the blob by digest
	size   int64         // the blob's size as the manifest declares it; -1 unknown
	// fetch opens the blob's bytes. verified says whether the stream
	// already checks the blob digest at its end (the registry client
	// does); otherwise Open hashes it.
	fetch func(ctx context.Context) (rc io.ReadCloser, verified bool, err error)
	name  string // names the layer in messages
}

var _ snapshot.Layer = (*layer)(nil)

func (l *layer) DiffID() digest.Digest { return l.diffID }
func (l *layer) Blob() digest.Digest   { return l.blob }
func (l *layer) Size() int64           { return l.size }

var _ snapshot.SizedLayer = (*layer)(nil)

// Open fetches the blob and returns its uncompressed tar stream. The
// compression is read from the blob's first bytes (gzip, zstd, or none),
// as Docker does, whatever the media type claims. When the uncompressed
// stream ends, Open's stream reads the blob to its end and checks its
// size and digest: a mismatch or a short blob is Read's error, naming
// the layer, instead of io.EOF. Open is safe for concurrent use; each
// stream is the caller's to close.
func (l *layer) Open(ctx context.Context) (io.ReadCloser, error) {
	rc, verified, err := l.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	b := &blobReader{r: rc, want: l.size, blob: l.blob}
	s := &stream{ctx: ctx, name: l.name, closers: []func() error{rc.Close}}
	if !verified && l.blob != "" {
		b.h = l.blob.Algorithm().Hash()
	}
	br := bufio.NewReaderSize(b, 64<<10)
	s.raw, s.blob = br, b
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, s.wrap(err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: gzip: %w", l.name, err)
		}
		s.dec = z
		s.closers = append(s.closers, z.Close)
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: zstd: %w", l.name, err)
		}
		s.dec = z
		s.closers = append(s.closers, func() error { z.Close(); return nil })
	default:
		s.dec = br // an uncompressed tar
	}
	return s, nil
}

// stream is a layer's uncompressed tar stream over its blob.
type stream struct {
	ctx     context.Context // Open's: its end is the stream's error
	name    string
	dec     io.Reader // the uncompressed stream
	raw     io.Reader // the blob
	blob    *blobReader
	closers []func() error
	err     error // sticky
}

func (s *stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.dec.Read(p)
	if err == io.EOF && s.dec != s.raw {
		// The compressed stream may end before the blob does (padding, a
		// skippable frame): read the blob to its end, which checks it.
		if _, derr := io.Copy(io.Discard, s.raw); derr != nil {
			err = derr
		}
	}
	switch {
	case err == nil:
	case err == io.EOF:
		s.err = io.EOF
	default:
		s.err = s.wrap(err)
	}
	return n, s.err
}

// wrap names the layer in a read error, and says what the error means:
// the caller's context ended (the context's error, whatever the read
// made of it), the registry stopped sending (unreachable), or the blob
// is short.
func (s *stream) wrap(err error) error {
	switch {
	case s.ctx.Err() != nil:
		return context.Cause(s.ctx)
	case errors.Is(err, errTimeout):
		return fmt.Errorf("%s: %w: %w", s.name, snapshot.ErrUnreachable, err)
	case err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%s: truncated: %w", s.name, err)
	}
	return fmt.Errorf("%s: %w", s.name, err)
}

// BlobRead is the blob bytes read so far, for progress.
func (s *stream) BlobRead() int64 { return s.blob.read.Load() }

var _ snapshot.BlobCounter = (*stream)(nil)

func (s *stream) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// blobReader counts a blob's bytes against the size its manifest declares
// and, with h set, hashes them against its digest: both are checked at
// the blob's end, and a blob longer than declared fails as soon as it is.
// Its errors do not name the blob: the layer's stream does.
type blobReader struct {
	r    io.Reader
	want int64 // -1: unknown
	got  int64
	read atomic.Int64 // got, for another goroutine
	blob digest.Digest
	h    hash.Hash
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.got += int64(n)
	b.read.Store(b.got)
	if b.h != nil {
		b.h.Write(p[:n])
	}
	if b.want >= 0 && b.got > b.want {
		return n, fmt.Errorf("longer than the %d bytes its manifest declares", b.want)
	}
	if errors.Is(err, errTimeout) {
		return n, fmt.Errorf("%w, after %d of the blob's %d bytes", err, b.got, b.want)
	}
	if err != nil && b.want >= 0 && b.got < b.want && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// Whatever the transport says (a checksum, a closed connection),
		// the blob ended early.
		return n, fmt.Errorf("truncated: read %d bytes, its manifest declares %d: %w", b.got, b.want, err)
	}
	if err == io.EOF {
		if b.want >= 0 && b.got != b.want {
			return n, fmt.Errorf("truncated: read %d bytes, its manifest declares %d: %w", b.got, b.want, io.ErrUnexpectedEOF)
		}
		if b.h != nil {
			if got := digest.NewDigest(b.blob.Algorithm(), b.h); got != b.blob {
				return n, fmt.Errorf("content has digest %s: %w", got, snapshot.ErrDigestMismatch)
			}
		}
	}
	return n, err
}
