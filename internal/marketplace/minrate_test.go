package marketplace_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// TestDownloadMinRate is issue 15's trickle attack: a host sends one byte
// every 50 ms, never idle long enough for the idle timeout, to hold the job
// slot until the total timeout (30 min by default). The minimum rate ends
// it once the grace (the idle timeout) is used up; a normal download with
// the same limits goes through.
func TestDownloadMinRate(t *testing.T) {
	gcode := fixtureGcode(t)
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) {
		o.DownloadIdleTimeout = 400 * time.Millisecond
		o.DownloadMinRate = 4 << 10
		o.DownloadTimeout = time.Hour
	})
	e.pair()
	for _, c := range []struct {
		kind marketsim.DownloadKind
		call marketsim.Call
	}{{marketsim.DownloadStorage, marketsim.CallStorage}, {marketsim.DownloadGCS, marketsim.CallDownload}} {
		id := e.createJob(gcode, c.kind)
		jobs, err := e.client.Poll(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		var job marketplace.Job
		for _, j := range jobs {
			if j.ID == id {
				job = j
			}
		}
		e.sim.SetFault(c.call, marketsim.Fault{TrickleEvery: 50 * time.Millisecond, Count: 1})
		start := time.Now()
		d, err := e.client.Download(ctxT(t), job.ID, job.DownloadURL)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, d)
		d.Close()
		if !errors.Is(err, marketplace.ErrTooSlow) {
			t.Fatalf("%s: trickled download ended with %v after %d bytes", c.call, err, n)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("%s: the trickle held the download for %v", c.call, el)
		}
		// The same job at full speed is unaffected.
		d, err = e.client.Download(ctxT(t), job.ID, job.DownloadURL)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(d)
		d.Close()
		if err != nil || string(decryptJob(t, e.priv, job, got)) != string(gcode) {
			t.Fatalf("%s: clean download after the trickle: %v", c.call, err)
		}
	}
}
