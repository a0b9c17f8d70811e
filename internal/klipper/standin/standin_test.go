package standin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/internal/testhook"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

const testTimeout = 20 * time.Second

func setup(t *testing.T, cfg standin.Config) (*klipper.Server, *standin.Standin) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lmk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "k.sock")
	srv := klipper.NewServer(klipper.Options{})
	l, err := klipper.Listen(socket, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ctx, l) }()
	cfg.SocketPath = socket
	cfg.ReconnectMin = 10 * time.Millisecond
	cfg.MinStatusGap = 5 * time.Millisecond
	k := standin.New(cfg)
	ran := make(chan struct{})
	go func() { defer close(ran); k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
		<-ran
	})
	if err := k.WaitConnected(ctxFor(t), true); err != nil {
		t.Fatal(err)
	}
	return srv, k
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

type expectation struct {
	Summary struct {
		FilamentUsedMM *struct{ Value float64 } `json:"filament_used_mm"`
		LayerCount     *struct{ Value int }     `json:"layer_count"`
	} `json:"summary"`
	Slicer string `json:"slicer"`
}

// Every slicer fixture prints to completion and the bytes read are the
// bytes sent; filament from the E moves agrees with the slicer's own total.
func TestPrintsEveryFixture(t *testing.T) {
	srv, k := setup(t, standin.Config{})
	for i, fx := range testutil.Fixtures(t) {
		content := fx.Bytes(t)
		var exp expectation
		if raw, err := os.ReadFile(fx.ExpectPath); err != nil {
			t.Fatal(err)
		} else if err := json.Unmarshal(raw, &exp); err != nil {
			t.Fatalf("%s: %v", fx.ExpectPath, err)
		}
		sum := sha256.Sum256(content)
		jobID := "fx" + string(rune('a'+i))
		if err := srv.Print(ctxFor(t), klipper.PrintRequest{JobID: jobID}, testutil.SealedMemfd(t, content)); err != nil {
			t.Fatalf("%s: %v", fx.Name, err)
		}
		// Only a bound: the 30 MB fixture, read line by line, takes about
		// a second alone but over 20 s under -race on a loaded machine.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		_, err := k.WaitFor(ctx, func(klipper.Status) bool { return len(k.Prints()) == i+1 })
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", fx.Name, err)
		}
		st := k.Status()
		waitServerHeardDone(t, srv, klipper.VirtualName(jobID))
		rec := k.Prints()[i]
		if rec.FinalState != standin.StateComplete || rec.SHA256 != hex.EncodeToString(sum[:]) || rec.BytesRead != int64(len(content)) {
			t.Errorf("%s: record %+v", fx.Name, rec)
		}
		if st.VirtualSDCard.Progress != 1 {
			t.Errorf("%s: progress %v", fx.Name, st.VirtualSDCard.Progress)
		}
		// Cura's CLI header carries a placeholder total; skip it. The
		// slicers' totals leave out the start G-code's purge line (7–9 mm
		// on the small PrusaSlicer fixtures), hence 1 %.
		if f := exp.Summary.FilamentUsedMM; f != nil && exp.Slicer != "cura" {
			if rel := math.Abs(rec.FilamentUsed-f.Value) / f.Value; rel > 0.01 {
				t.Errorf("%s: filament %.2f mm, slicer says %.2f mm", fx.Name, rec.FilamentUsed, f.Value)
			}
		}
		if l := exp.Summary.LayerCount; l != nil && exp.Slicer == "prusaslicer" {
			if cl := st.PrintStats.Info.CurrentLayer; cl == nil || *cl != l.Value {
				t.Errorf("%s: current layer %v, want %d", fx.Name, cl, l.Value)
			}
		}
		t.Logf("%s: %d bytes, filament %.2f mm, SHA-256 ok", fx.Name, len(content), rec.FilamentUsed)
	}
}

// waitServerHeardDone waits until the server has heard that the print of
// name completed. The stand-in rate-limits its status reports, so an
// instant print can end before the server has even heard it start; until
// the server sees this print's own completion it may refuse the next one as
// busy.
func waitServerHeardDone(t *testing.T, srv *klipper.Server, name string) {
	t.Helper()
	waitServerHeardEnd(t, srv, name, standin.StateComplete)
}

// waitServerHeardEnd waits until the server has heard the print of name end
// in state (complete, error, cancelled).
func waitServerHeardEnd(t *testing.T, srv *klipper.Server, name, state string) {
	t.Helper()
	testutil.Eventually(t, testTimeout, fmt.Sprintf("the server to hear %s end in %s", name, state), func() bool {
		st := srv.State().Status
		return st.PrintStats.Filename == name && st.PrintStats.State == state && !st.VirtualSDCard.IsActive
	})
}

func TestSpeedAndDurations(t *testing.T) {
	const speed = 100_000 // bytes/s
	srv, k := setup(t, standin.Config{Speed: speed})
	content := []byte("M83\n")
	for len(content) < 20_000 {
		content = append(content, "G1 X1 Y1 E0.01\n"...)
	}
	start := time.Now()
	if err := srv.Print(ctxFor(t), klipper.PrintRequest{JobID: "paced"}, testutil.SealedMemfd(t, content)); err != nil {
		t.Fatal(err)
	}
	if _, err := k.WaitFor(ctxFor(t), func(s klipper.Status) bool { return s.VirtualSDCard.FilePosition > 0 }); err != nil {
		t.Fatal(err)
	}
	if err := k.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := k.Status()
	if paused.PrintStats.State != standin.StatePaused {
		t.Fatalf("state %q after Pause", paused.PrintStats.State)
	}
	time.Sleep(20 * time.Millisecond) // let wall time pass while paused
	again := k.Status()
	if again.PrintStats.PrintDuration != paused.PrintStats.PrintDuration || again.VirtualSDCard.FilePosition != paused.VirtualSDCard.FilePosition {
		t.Errorf("print advanced while paused: %+v → %+v", paused.PrintStats, again.PrintStats)
	}
	if again.PrintStats.TotalDuration <= paused.PrintStats.TotalDuration {
		t.Errorf("total_duration stood still while paused")
	}
	if err := k.Pause(); err == nil {
		t.Error("Pause of a paused print succeeded")
	}
	if err := k.Resume(); err != nil {
		t.Fatal(err)
	}
	st, err := k.WaitFor(ctxFor(t), func(s klipper.Status) bool { return s.PrintStats.State == standin.StateComplete })
	if err != nil {
		t.Fatal(err)
	}
	if elapsed, min := time.Since(start), time.Duration(len(content))*time.Second/speed; elapsed < min {
		t.Errorf("read %d bytes in %v at %d B/s; pacing allows no less than %v", len(content), elapsed, speed, min)
	}
	if st.PrintStats.PrintDuration >= st.PrintStats.TotalDuration || st.PrintStats.PrintDuration <= 0 {
		t.Errorf("durations print %v total %v", st.PrintStats.PrintDuration, st.PrintStats.TotalDuration)
	}
	if math.Abs(st.PrintStats.FilamentUsed-float64((len(content)-4)/15)*0.01) > 1e-6 {
		t.Errorf("filament %v", st.PrintStats.FilamentUsed)
	}
}

func TestInjectedErrorAndUnsealedFile(t *testing.T) {
	srv, k := setup(t, standin.Config{Speed: 1000})
	content := []byte("G28\nG1 X10 Y10 E1\nG1 X20 Y20 E2\n")
	for len(content) < 5000 {
		content = append(content, "G1 X1\n"...)
	}
	if err := srv.Print(ctxFor(t), klipper.PrintRequest{JobID: "err"}, testutil.SealedMemfd(t, content)); err != nil {
		t.Fatal(err)
	}
	if err := k.InjectError("Move out of range: 300.000 0.000 0.200 [0.000]"); err != nil {
		t.Fatal(err)
	}
	st := k.Status()
	if st.PrintStats.State != standin.StateError || st.PrintStats.Message == "" || st.VirtualSDCard.IsActive {
		t.Errorf("after injected error: %+v", st)
	}
	if err := k.InjectError("again"); err == nil {
		t.Error("InjectError without a print succeeded")
	}
	// Until the server hears the error (status is rate-limited) it
	// refuses the next print as busy.
	waitServerHeardEnd(t, srv, klipper.VirtualName("err"), standin.StateError)

	// The stand-in checks seals like the extra: an unsealed memfd (which
	// only the test hook lets the server send) is refused.
	unsealed, err := memfd.Create("unsealed")
	if err != nil {
		t.Fatal(err)
	}
	defer unsealed.Close()
	if _, err := unsealed.Write(content); err != nil {
		t.Fatal(err)
	}
	testhook.SkipSealCheck.Store(true)
	err = srv.Print(ctxFor(t), klipper.PrintRequest{JobID: "unsealed"}, unsealed)
	testhook.SkipSealCheck.Store(false)
	var rej *klipper.RejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Message, "lacks the write, grow and shrink seals") {
		t.Errorf("unsealed print: %v, want a refusal naming the seals", err)
	}
	if got := k.Prints(); len(got) != 1 {
		t.Errorf("unsealed file was printed: %+v", got)
	}
}
