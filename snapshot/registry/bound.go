package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// boundTransport bounds every wait of a request on the network by d:
// from the request's start to its response's headers (the connection,
// the TLS handshake, the server's answer) and then each read of the
// body, so a body that keeps coming is never cut, however long it is,
// but one that stops for d is. Either failure wraps errTimeout.
type boundTransport struct {
	next http.RoundTripper
	d    time.Duration
}

func (t *boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	w := &watchdog{d: t.d, parent: req.Context()}
	w.timer = time.AfterFunc(t.d, func() {
		w.fired.Store(true)
		cancel()
	})
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	w.timer.Stop()
	if err != nil {
		cancel()
		return nil, w.err("no answer", err)
	}
	// The body owns the cancel from here: Close releases it.
	resp.Body = &idleBody{rc: resp.Body, w: w, cancel: cancel}
	return resp, nil
}

// watchdog is the timer of one request.
type watchdog struct {
	d      time.Duration
	parent context.Context // the caller's: its cancellation is no timeout
	timer  *time.Timer
	fired  atomic.Bool
}

// err is err, or a timeout naming what did not come if the watchdog cut
// the request and the caller did not cancel it.
func (w *watchdog) err(what string, err error) error {
	if w.fired.Load() && w.parent.Err() == nil {
		return fmt.Errorf("%w: %s within %s", errTimeout, what, w.d)
	}
	return err
}

// idleBody is a response body whose every read must bring a byte (or the
// end) within the watchdog's d.
type idleBody struct {
	rc     io.ReadCloser
	w      *watchdog
	cancel context.CancelFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.w.timer.Reset(b.w.d)
	n, err := b.rc.Read(p)
	b.w.timer.Stop()
	switch {
	case err == io.EOF:
		// The connection went back to the pool: release the request's
		// context now, as a reader that drains a body and drops it
		// (go-containerregistry's retry does) never calls Close.
		b.cancel()
	case err != nil:
		err = b.w.err("no byte of the body", err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.w.timer.Stop()
	err := b.rc.Close()
	b.cancel()
	return err
}

// defaultTransport is go-containerregistry's transport with its own bounds
// on connecting and handshaking set to d as well, so that no connection
// attempt outlives a request that boundTransport gave up on.
func defaultTransport(d time.Duration) http.RoundTripper {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: d, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = d
	t.ResponseHeaderTimeout = d
	return t
}

// retryBackoff is the wait between tries of a request that may pass when
// retried: a fraction of the timeout, so that a retried request stays
// within about the bound of one, and never the library's seconds.
func retryBackoff(d time.Duration) remote.Backoff {
	return remote.Backoff{Duration: min(d/8, time.Second), Factor: 2, Jitter: 0.1, Steps: 3}
}

// retryStatus are the answers worth asking again: a server error may be
// a registry restarting. A 4xx (429 included) is a refusal that a retry
// a few milliseconds later would only repeat.
var retryStatus = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// retryable reports whether a failed request may pass if sent again: a
// server error (one of retryStatus) or a connection the peer dropped. A
// timeout is not: the registry did not answer for a whole timeout, and
// asking again would double the wait; nor is a cancelled context.
func retryable(err error) bool {
	if err == nil || errors.Is(err, errTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// refusals is an http.RoundTripper that asks a registry once per command
// (one Source) for a manifest it refused: a later GET or HEAD of the same
// URL gets the same answer without a request. A refusal is a 4xx that no
// retry or credential changes: not 401 and 403 (the token dance asks
// again with credentials), 408 or 429.
type refusals struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string]refusal // "METHOD URL" → the answer
}

type refusal struct {
	status int
	header http.Header
	body   []byte
}

// maxRefusal bounds the body of a refusal kept to replay: error bodies
// are a few hundred bytes.
const maxRefusal = 64 << 10

func (t *refusals) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) || !strings.Contains(req.URL.Path, "/manifests/") {
		return t.next.RoundTrip(req)
	}
	key := req.Method + " " + req.URL.String()
	t.mu.Lock()
	r, ok := t.seen[key]
	t.mu.Unlock()
	if ok {
		return &http.Response{
			Status: fmt.Sprintf("%d %s", r.status, http.StatusText(r.status)), StatusCode: r.status,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: r.header.Clone(), Body: io.NopCloser(bytes.NewReader(r.body)),
			ContentLength: int64(len(r.body)), Request: req,
		}, nil
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 || resp.StatusCode >= 500 {
		return resp, err
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return resp, err
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxRefusal))
	resp.Body.Close()
	if rerr != nil {
		return nil, rerr
	}
	t.mu.Lock()
	if t.seen == nil {
		t.seen = map[string]refusal{}
	}
	t.seen[key] = refusal{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
	t.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
