package daemon_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// uploadMemfds counts this process's (the in-process daemon's) upload memfds.
func uploadMemfds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "/memfd:lmnt-upload") {
			n++
		}
	}
	return n
}

// TestLocalUploadsCappedThroughTheAPI is the attack of issue 15 item 3 as a
// local caller makes it: upload after upload to the start-print endpoint.
// The caps of lmntd.toml hold, a refused upload leaves nothing in memory,
// and cancelling a queued job frees its upload at once.
func TestLocalUploadsCappedThroughTheAPI(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, // jobs stay queued
		ExtraTOML: "[limits]\nmax_local_jobs = 2\nmax_local_queue_size = \"1MiB\"\n"})
	upload := func(size int) daemontest.Response {
		body := bytes.Repeat([]byte("G1 X1\n"), size/6)
		return daemontest.Do(t, d.Client, "POST", "http://lmntd/machine/encrypted_print/start_print?filename=a.gcode",
			bytes.NewReader(body), http.Header{"Content-Type": {"text/x-gcode"}})
	}
	var first struct {
		JobID string `json:"job_id"`
	}
	r := upload(300 << 10)
	r.JSON(t, &first)
	if r.Status != http.StatusOK {
		t.Fatalf("first upload: %d %s", r.Status, r.Body)
	}
	// Over the room left: refused by its announced length, before it is stored.
	if r := upload(800 << 10); r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload over the room left: %d %s", r.Status, r.Body)
	}
	if r := upload(300 << 10); r.Status != http.StatusOK {
		t.Fatalf("second upload: %d %s", r.Status, r.Body)
	}
	if r := upload(100); r.Status != http.StatusTooManyRequests || !strings.Contains(string(r.Body), "limits.max_local_jobs") {
		t.Fatalf("third upload over max_local_jobs = 2: %d %s", r.Status, r.Body)
	}
	if n := uploadMemfds(t); n != 2 {
		t.Fatalf("%d upload memfds open, want the 2 queued", n)
	}
	if r := d.Call("POST", "/lmnt/v1/jobs/cancel", map[string]string{"id": first.JobID}); r.Status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	if n := uploadMemfds(t); n != 1 {
		t.Fatalf("%d upload memfds open after the cancel, want 1", n)
	}
	if r := upload(300 << 10); r.Status != http.StatusOK {
		t.Fatalf("upload after the cancel freed room: %d %s", r.Status, r.Body)
	}
}

// TestDoctorComparesMemoryMaxWithLimits: limits raised past the unit's
// MemoryMax= are pointed out (the kernel would otherwise kill lmntd in the
// middle of a job), with the fix.
func TestDoctorComparesMemoryMaxWithLimits(t *testing.T) {
	host := t.TempDir()
	write := func(rel, data string) {
		p := filepath.Join(host, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/machine-id", "0123456789abcdef0123456789abcdef\n")
	write("proc/self/cgroup", "0::/system.slice/lmntd.service\n")
	write("sys/fs/cgroup/system.slice/lmntd.service/memory.max", fmt.Sprintln(896<<20)) // the shipped unit
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, HostRoot: host})
	if c := doctorCheck(t, d, "memory limit"); c.Result != apitype.CheckOK {
		t.Fatalf("default limits under MemoryMax=896M: %+v", c)
	}
	d.Stop()

	d = daemontest.Start(t, daemontest.Options{NoStandin: true, HostRoot: host,
		ExtraTOML: "[limits]\nmax_download_size = \"1GiB\"\n"})
	c := doctorCheck(t, d, "memory limit")
	if c.Result != apitype.CheckWarn || !strings.Contains(c.Detail, "limits.max_download_size") || !strings.Contains(c.Fix, "MemoryMax=") {
		t.Fatalf("a 1 GiB download limit under MemoryMax=896M: %+v", c)
	}
}
