package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// memfdBody is an upload as the API stores it: a memfd, closed by Release
// or by closing the body Open returns.
func memfdBody(t *testing.T, name string, data []byte) LocalJob {
	t.Helper()
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return LocalJob{Name: name, Size: int64(len(data)),
		Open: func(context.Context) (io.ReadCloser, error) {
			return struct {
				io.Reader
				io.Closer
			}{io.NewSectionReader(f, 0, int64(len(data))), f}, nil
		},
		Release: func() { f.Close() }}
}

func memfdOpen(t *testing.T, name string) bool {
	for _, m := range openMemfds(t) {
		if strings.HasPrefix(m, "/memfd:"+name+" ") {
			return true
		}
	}
	return false
}

// TestLocalUploadsCapped is the attack of issue 15 item 3: a caller of the
// local API queues upload after upload, each held in memory. The queue
// refuses what exceeds its caps, and a cancelled job's memfd is closed at
// once, not by the garbage collector.
func TestLocalUploadsCapped(t *testing.T) {
	w := newWorld(t) // no Klipper: local jobs stay queued
	d := w.startDaemon(func(o *Options) {
		o.LocalLimits = func() (int, int64) { return 3, 1 << 20 }
	})
	defer d.stop()
	big := bytes.Repeat([]byte("G1 X1\n"), 600<<10/6)
	small := bytes.Repeat([]byte("G1 X1\n"), 100<<10/6)

	submit := func(j LocalJob) (string, error) {
		id, err := d.eng.SubmitLocal(j)
		if err != nil {
			j.Release() // as the API does with a refused upload
		}
		return id, err
	}
	a, err := submit(memfdBody(t, "upload-a", big))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := submit(memfdBody(t, "upload-b", big)); !errors.Is(err, ErrLocalQueueFull) || !strings.Contains(err.Error(), "limits.max_local_queue_size") {
		t.Fatalf("second 600 KiB upload under a 1 MiB cap: %v", err)
	}
	if _, err := submit(memfdBody(t, "upload-c", small)); err != nil {
		t.Fatal(err)
	}
	if _, err := submit(memfdBody(t, "upload-d", small)); err != nil {
		t.Fatal(err)
	}
	if _, err := submit(memfdBody(t, "upload-e", small)); !errors.Is(err, ErrLocalQueueFull) || !strings.Contains(err.Error(), "limits.max_local_jobs") {
		t.Fatalf("fourth upload under a cap of 3: %v", err)
	}
	if room := d.eng.LocalRoom(); room != 1<<20-int64(len(big)+2*len(small)) {
		t.Fatalf("LocalRoom = %d", room)
	}
	tooBig := bytes.Repeat([]byte{'x'}, 2<<20)
	if _, err := submit(memfdBody(t, "upload-f", tooBig)); !errors.Is(err, ErrLocalQueueFull) {
		t.Fatalf("an upload larger than the whole cap: %v", err)
	}

	if !memfdOpen(t, "upload-a") {
		t.Fatal("queued upload's memfd not open")
	}
	if err := d.eng.Cancel(a, "test"); err != nil {
		t.Fatal(err)
	}
	if memfdOpen(t, "upload-a") {
		t.Fatal("the cancelled job's memfd is still open")
	}
	// Its room is free again.
	if room := d.eng.LocalRoom(); room != 1<<20-2*int64(len(small)) {
		t.Fatalf("LocalRoom after the cancel = %d", room)
	}
	if _, err := submit(memfdBody(t, "upload-b2", big)); err != nil {
		t.Fatalf("upload after a cancel freed room: %v", err)
	}
	d.stop()
	if m := openMemfds(t); len(m) != 0 {
		t.Fatalf("memfds left open after the engine stopped: %v", m)
	}
}

// TestVerificationOracleClosed is the attack of issue 15 item 4: local jobs
// with varied key material, watching the answers. Every failure reads the
// same apart from a random reference, the detail is in the debug log only,
// and after five failures in an hour no local job is decrypted at all, also
// across a restart.
func TestVerificationOracleClosed(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(0)
	d := w.startDaemon()
	plain := fixtureGcode(t)
	garbage := func(i int) LocalJob {
		body := bytes.Repeat([]byte{byte(i)}, 4096)
		// A Fernet key of the right form, wrong for the body.
		return LocalJob{Name: "probe", Keys: KeyMaterial{FernetKey: "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="},
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }}
	}
	submitFail := func(i int) JobInfo {
		t.Helper()
		id, err := d.eng.SubmitLocal(garbage(i))
		if err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		return d.waitJob(t, id, "failure", func(j JobInfo) bool { return j.State.Terminal() })
	}
	seen := map[string]bool{}
	for i := range 4 {
		j := submitFail(i)
		if j.State != Failed || !refInMessage.MatchString(j.Message) || seen[j.Message] {
			t.Fatalf("probe %d ended %s %q", i, j.State, j.Message)
		}
		seen[j.Message] = true
		expectDetailOnlyInLog(t, d, j.Message, "Fernet")
	}
	// The fifth failure and a job queued behind it (they were submitted
	// at the same clock time, so either may start first): the second one
	// is refused without being decrypted.
	fifth, err := d.eng.SubmitLocal(garbage(5))
	if err != nil {
		t.Fatal(err)
	}
	sixth, err := d.eng.SubmitLocal(garbage(6))
	if err != nil {
		t.Fatal(err)
	}
	verified, refused := 0, 0
	for _, id := range []string{fifth, sixth} {
		j := d.waitJob(t, id, "its end", func(j JobInfo) bool { return j.State.Terminal() })
		switch {
		case j.State == Failed && refInMessage.MatchString(j.Message):
			verified++
		case j.State == Failed && strings.Contains(j.Message, "too many local jobs failed verification"):
			refused++
		default:
			t.Fatalf("job ended %s %q", j.State, j.Message)
		}
	}
	if verified != 1 || refused != 1 {
		t.Fatalf("%d failed verification, %d refused; want 1 and 1", verified, refused)
	}
	// Klipper's console says no more than the API.
	testutil.Eventually(t, testTimeout, "five verification failures on the console", func() bool {
		lines := strings.Join(w.klipper.ConsoleLines(), "\n")
		if strings.Contains(lines, "Fernet") || strings.Contains(lines, "gAAAAA") || strings.Contains(lines, "offset") {
			t.Fatalf("the console was told the detail:\n%s", lines)
		}
		return strings.Count(lines, VerificationFailed) >= 5
	})
	if _, err := d.eng.SubmitLocal(garbage(7)); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("sixth probe within the hour: %v", err)
	}
	d.stop()
	d = w.startDaemon()
	defer d.stop()
	if _, err := d.eng.SubmitLocal(garbage(8)); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("probe after a restart: %v", err)
	}
	w.clock.Advance(LocalFailureWindow)
	// An hour on, local jobs are taken again; plaintext ones still print.
	id, err := d.eng.SubmitLocal(LocalJob{Name: "plain", Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(plain)), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if j := d.waitJob(t, id, "printing", func(j JobInfo) bool { return j.State == Printing || j.State.Terminal() }); j.State != Printing {
		t.Fatalf("plaintext local job: %s %q", j.State, j.Message)
	}
}

// TestMarketplaceJobWithoutDEKRefused: a marketplace answer that drops the
// DEK package (a plaintext downgrade) fails the job before any download.
func TestMarketplaceJobWithoutDEKRefused(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(0)
	d := w.startDaemon()
	defer d.stop()
	id := w.createJob(fixtureGcode(t))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	js, err := d.client.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var offers []Offer
	for _, o := range adapters.Offers(js) {
		o.Keys = KeyMaterial{}
		offers = append(offers, o)
	}
	d.eng.Offer(offers)
	expectFailureAfter(t, w, d, id, "without a DEK package", 0)
}
