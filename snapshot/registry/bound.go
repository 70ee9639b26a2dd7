package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
	if err != nil && err != io.EOF {
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
