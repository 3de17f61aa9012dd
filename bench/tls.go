package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// wss:// and https:// targets. A server's certificate is checked against
// the system's roots, or Config.CAFile's (a PEM bundle: a self-signed
// certificate, a private CA), or not at all with Config.Insecure.
//
// A TLS receiver cannot be read off its socket's descriptor (the bytes
// there are records, not frames), so each has a goroutine blocked in
// Read (readTLS) where a plain one costs nothing while idle: a wss://
// run measures the server's TLS, and costs the bench a goroutine and a
// buffer per receiver.

// fillTLS checks Config.CAFile and builds the TLS configuration the
// run's clients use. Children rebuild it from the same fields.
func (c *Config) fillTLS() error {
	c.tls = nil
	if c.CAFile == "" && !c.Insecure {
		return nil
	}
	tlsURL := strings.HasPrefix(c.PublishURL, "https:")
	for _, u := range c.urls {
		tlsURL = tlsURL || strings.HasPrefix(u, "wss:")
	}
	if !tlsURL {
		return errors.New("ca file and insecure: only with a wss:// url (or an https:// publish url)")
	}
	cfg := &tls.Config{InsecureSkipVerify: c.Insecure, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca file %s: no PEM certificate in it", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	c.tls = cfg
	return nil
}

// tlsConn is what a TLS receiver's connection is.
type tlsConn interface{ ConnectionState() tls.ConnectionState }

// readTLS is a TLS receiver's read loop (see above): what onRead does for
// a plain one, in a goroutine of its own, until the connection ends.
func (r *receiver) readTLS() {
	defer close(r.reading)
	for {
		r.buf = slices.Grow(r.buf, max(r.parser.Need()-len(r.buf), 16<<10))
		n, err := r.nc.Read(r.buf[len(r.buf):cap(r.buf)])
		if n > 0 {
			r.now = time.Now().UnixNano()
			r.buf = r.buf[:len(r.buf)+n]
			if r.stable && r.pool.counting.Load() {
				r.wire += uint64(n)
			}
			perr := r.parse()
			r.flushFrames()
			if perr != nil {
				r.stopped(perr)
				return
			}
		}
		if err != nil {
			r.finish(ws.StatusAbnormalClosure) // EOF or reset without a close frame (or closed from here)
			return
		}
	}
}
