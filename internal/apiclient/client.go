// Package apiclient talks to lmntd's local API over its Unix socket: JSON
// requests, the API's error answers as *Error, and a connection failure
// explained in terms of the socket path (not running, permission denied,
// not a socket). The lmnt CLI and the demo use it.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is where lmntd's API listens.
const DefaultSocket = "/run/lmntd/api.sock"

// DefaultAnswerTimeout bounds the wait for lmntd's answer once a request is
// sent. The socket is systemd's: it accepts connections even while lmntd is
// not (yet) running, so without a bound a command would hang forever.
const DefaultAnswerTimeout = 60 * time.Second

// Client talks to lmntd's API socket.
type Client struct {
	socket  string
	timeout time.Duration
	hc      *http.Client
}

// New is a client of the API socket at socket; timeout bounds the wait for
// an answer once a request is sent.
func New(socket string, timeout time.Duration) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression:    true,
		ResponseHeaderTimeout: timeout,
	}
	return &Client{socket: socket, timeout: timeout, hc: &http.Client{Transport: tr}}
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// connError explains why the socket could not be reached, in terms of
// what --socket points at.
func (c *Client) connError(err error) error {
	if !strings.Contains(c.socket, "/") && strings.Contains(c.socket, ":") {
		return fmt.Errorf("--socket %s looks like a network address: it takes the path of lmntd's API socket (default %s)", c.socket, DefaultSocket)
	}
	if fi, serr := os.Stat(c.socket); serr == nil {
		switch {
		case fi.IsDir():
			return fmt.Errorf("%s is a directory: --socket takes the path of lmntd's API socket (default %s)", c.socket, DefaultSocket)
		case fi.Mode()&os.ModeSocket == 0:
			return fmt.Errorf("%s is not a socket: --socket takes the path of lmntd's API socket (default %s)", c.socket, DefaultSocket)
		}
	}
	switch {
	case errors.Is(err, syscall.EPROTOTYPE):
		return fmt.Errorf("%s is not lmntd's API socket (it looks like the Klipper bridge socket): the API socket is %s", c.socket, DefaultSocket)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("lmntd is not running (nothing listens on %s): start it with `sudo systemctl start lmntd`, or pass --socket", c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s: join group lmnt (`sudo usermod -aG lmnt $USER`, then log out and in again) or use sudo", c.socket)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("cannot reach lmntd on %s: %s", c.socket, errno.Error())
	}
	return fmt.Errorf("cannot reach lmntd on %s: %w", c.socket, err)
}

// Do sends a request and decodes a JSON answer into out (when non-nil).
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://lmntd"+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return c.connError(err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var timeout interface{ Timeout() bool }
		if errors.As(err, &timeout) && timeout.Timeout() {
			return fmt.Errorf("lmntd did not answer on %s within %s: is it starting or stuck? See `systemctl status lmntd` and `journalctl -u lmntd`", c.socket, c.timeout)
		}
		return c.connError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading lmntd's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
			return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("lmntd answered %s", resp.Status)}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("unreadable answer from lmntd: %w", err)
	}
	return nil
}

// Get asks path and decodes the JSON answer into out (when non-nil).
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, "", out)
}

// Post sends in as JSON (nothing when nil) and decodes the answer into out.
func (c *Client) Post(ctx context.Context, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.Do(ctx, http.MethodPost, path, body, "application/json", out)
}

// Timeout is the client's answer timeout.
func (c *Client) Timeout() time.Duration { return c.timeout }
