package daemon_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// TestStateDiskFullShown: with the state disk full, STATUS= (logged with
// each change), `lmnt status` (the status endpoint) and doctor say so, and
// all three clear by themselves once space returns. It needs a tmpfs it can
// fill, so it mounts one (root); the engine's own test covers the rest
// with an injected writer where that is not possible.
func TestStateDiskFullShown(t *testing.T) {
	var jobsDir string
	mounted := false
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, Prepare: func(stateDir string) {
		jobsDir = filepath.Join(stateDir, "jobs")
		if err := os.MkdirAll(jobsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", jobsDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700"); err != nil {
			t.Logf("cannot mount a tmpfs: %v", err)
			return
		}
		mounted = true
		t.Cleanup(func() { _ = unix.Unmount(jobsDir, unix.MNT_DETACH) })
	}})
	if !mounted {
		t.Skip("needs root to mount a tmpfs; TestFullStateDisk in internal/jobs injects ENOSPC instead")
	}
	filler := filepath.Join(jobsDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 512)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	// A local upload needs a journal record: refused, and the daemon
	// now knows the disk is full.
	r := daemontest.Do(t, d.Client, "POST", "http://lmntd/machine/encrypted_print/start_print?filename=a.gcode",
		bytes.NewReader([]byte("G28\nG1 X10\n")), http.Header{"Content-Type": {"text/x-gcode"}})
	if r.Status != http.StatusInsufficientStorage || !strings.Contains(string(r.Body), "state disk full") {
		t.Fatalf("upload with the journal full: %d %s", r.Status, r.Body)
	}
	status := func() apitype.Status {
		var st apitype.Status
		d.Call("GET", "/lmnt/v1/status", nil).JSON(t, &st)
		return st
	}
	journal := func() apitype.Check {
		var rep apitype.DoctorReport
		d.Call("GET", "/lmnt/v1/doctor?offline=1", nil).JSON(t, &rep)
		for _, c := range rep.Checks {
			if c.Name == "job journal" {
				return c
			}
		}
		t.Fatalf("doctor has no job journal check: %+v", rep)
		return apitype.Check{}
	}
	st := status()
	if !strings.HasPrefix(st.Summary, "state disk full") || st.Health != apitype.HealthDegraded {
		t.Fatalf("status with the disk full: %q, %s", st.Summary, st.Health)
	}
	if c := journal(); c.Result != apitype.CheckFail || !strings.Contains(c.Detail, "state disk full") || c.Fix == "" {
		t.Fatalf("doctor with the disk full: %+v", c)
	}
	d.WaitFor("STATUS= to say the disk is full", func() bool {
		return strings.Contains(d.Log.String(), `summary="state disk full`)
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("the journal to be written again", func() bool { return !strings.HasPrefix(status().Summary, "state disk full") })
	if c := journal(); c.Result != apitype.CheckOK {
		t.Fatalf("doctor after space returned: %+v", c)
	}
	r = daemontest.Do(t, d.Client, "POST", "http://lmntd/machine/encrypted_print/start_print?filename=a.gcode",
		bytes.NewReader([]byte("G28\nG1 X10\n")), http.Header{"Content-Type": {"text/x-gcode"}})
	if r.Status != http.StatusOK {
		t.Fatalf("upload after space returned: %d %s", r.Status, r.Body)
	}
}
