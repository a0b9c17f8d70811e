package jobs

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// prioConn counts the bytes read from a connection by the priority of the
// thread that read them: whoever reads the socket also decrypts the TLS
// records.
type prioConn struct {
	net.Conn
	mu     *sync.Mutex
	byNice map[int]int64
}

func (c prioConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		nice := -100
		if pr, perr := threadprio.Of(unix.Gettid()); perr == nil {
			nice = pr.Nice
		}
		c.mu.Lock()
		c.byNice[nice] += int64(n)
		c.mu.Unlock()
	}
	return n, err
}

// TestDownloadBodyReadAtLowPriority: the body of a job's download is read
// from the socket (and its TLS records decrypted) on the low-priority
// thread, also from a server that speaks HTTP/2, where the connection's own
// goroutine would read it at normal priority. Only the connection's set-up
// and the response head may be read elsewhere.
func TestDownloadBodyReadAtLowPriority(t *testing.T) {
	const size = 4 << 20
	body := make([]byte, size)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "job", time.Time{}, bytes.NewReader(body))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	var mu sync.Mutex
	byNice := map[int]int64{}
	tr := srv.Client().Transport.(*http.Transport).Clone()
	dial := (&net.Dialer{}).DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return prioConn{Conn: c, mu: &mu, byNice: byNice}, nil
	}
	client, err := marketplace.New(marketplace.Options{BaseURL: srv.URL, StateDir: t.TempDir(), Transport: tr,
		RequestTimeout: 5 * time.Second, DownloadIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.SetToken(marketplace.Token{Value: "test-token", PrinterID: "printer-1", Expiry: time.Now().Add(time.Hour), ObtainedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	read := runLowPriority(discardLogger(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := client.Download(ctx, "job-1", srv.URL+"/files/job-1")
		if err != nil {
			t.Error(err)
			return false
		}
		defer d.Close()
		if n, err := io.Copy(io.Discard, d); err != nil || n != size {
			t.Errorf("read %d bytes, %v", n, err)
		}
		return true
	})
	if !read {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	low := byNice[workNice]
	var other int64
	for nice, n := range byNice {
		if nice != workNice {
			other += n
		}
	}
	t.Logf("bytes read by thread nice value: %v", byNice)
	if low < size || other > 64<<10 {
		t.Errorf("bytes read by thread nice value: %v; want the %d body bytes at nice %d and no more than the set-up elsewhere", byNice, size, workNice)
	}
}
