package registry

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// benchLayer is the uncompressed layer the decompression benchmarks
// use: the file $ROOTSWAP_BENCH_LAYER (say, a 100 MB rootfs tar), else 32
// MiB of half text, half random bytes.
func benchLayer(b *testing.B) []byte {
	if f := os.Getenv("ROOTSWAP_BENCH_LAYER"); f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}
	r := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	line := []byte("usr/lib/x86_64-linux-gnu/libexample.so.1 -rw-r--r-- root root 12345\n")
	for buf.Len() < 32<<20 {
		buf.Write(line)
		var chunk [64]byte
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
		buf.Write(chunk[:])
	}
	return buf.Bytes()
}

func benchDecompress(b *testing.B, blob []byte, size int, open func(io.Reader) (io.Reader, error)) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		r, err := open(bytes.NewReader(blob))
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, r); err != nil || n != int64(size) {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}

// BenchmarkGunzip compares the standard library's gunzip with
// klauspost/compress's, which Open uses, on the same gzip blob.
func BenchmarkGunzip(b *testing.B) {
	raw := benchLayer(b)
	var blob bytes.Buffer
	z := stdgzip.NewWriter(&blob)
	z.Write(raw)
	z.Close()
	b.Run("stdlib", func(b *testing.B) {
		benchDecompress(b, blob.Bytes(), len(raw), func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) })
	})
	b.Run("klauspost", func(b *testing.B) {
		benchDecompress(b, blob.Bytes(), len(raw), func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) })
	})
}

// BenchmarkUnzstd is Open's zstd decoder, as Open configures it.
func BenchmarkUnzstd(b *testing.B) {
	raw := benchLayer(b)
	var blob bytes.Buffer
	z, _ := zstd.NewWriter(&blob)
	z.Write(raw)
	z.Close()
	benchDecompress(b, blob.Bytes(), len(raw), func(r io.Reader) (io.Reader, error) {
		return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
	})
}
