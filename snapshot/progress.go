package snapshot

import "github.com/opencontainers/go-digest"

// LayerProgress is a Progress that a layered import (registry, OCI
// layout, archive) also tells about its layers' blobs, so that it can
// show downloaded bytes of each blob's size rather than the uncompressed
// stream's bytes. Its methods may be called from several goroutines at
// once (layers are fetched in parallel) and must be quick.
type LayerProgress interface {
	Progress
	// Layers is told, once and before any fetch, the layers to fetch
	// and how many others the store has already (skipped).
	Layers(fetch []LayerFetch, skipped int)
	// Fetching is told that fetch k (an index into Layers' list) has
	// started; read reports the blob bytes read so far (compressed, as
	// downloaded) and may be called from any goroutine until Fetched.
	// A source whose streams do not count their blob bytes gives nil.
	Fetching(k int, read func() int64)
	// Fetched is told that fetch k has ended, with its error (nil: the
	// layer is stored).
	Fetched(k int, err error)
}

// LayerFetch is one layer a layered import fetches.
type LayerFetch struct {
	DiffID digest.Digest
	Blob   digest.Digest // "" when the source names none
	Size   int64         // the blob's size as the source declares it; -1 unknown
}

// SizedLayer is a Layer whose blob size is known before it is opened
// (a manifest's descriptor, an archive's header).
type SizedLayer interface {
	Layer
	Size() int64 // -1 unknown
}

// BlobCounter is a stream from Layer.Open that counts the blob bytes it
// has read so far: compressed, as downloaded. BlobRead is safe to call
// from any goroutine.
type BlobCounter interface {
	BlobRead() int64
}

// planLayers tells p, if it is a LayerProgress, which layers of ls are
// fetched (missing, indexes into ls) and how many distinct others the
// store has.
func planLayers(p Progress, ls []Layer, ids []digest.Digest, missing []int) LayerProgress {
	lp, ok := p.(LayerProgress)
	if !ok {
		return nil
	}
	fetch := make([]LayerFetch, len(missing))
	for k, i := range missing {
		size := int64(-1)
		if s, ok := ls[i].(SizedLayer); ok {
			size = s.Size()
		}
		fetch[k] = LayerFetch{DiffID: ids[i], Blob: ls[i].Blob(), Size: size}
	}
	distinct := map[digest.Digest]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	lp.Layers(fetch, len(distinct)-len(missing))
	return lp
}
