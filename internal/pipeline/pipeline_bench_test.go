package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// benchInputs are the two kinds of real slicer output the gate costs very
// different amounts on: absolute extrusion (M82, PrusaSlicer's and Cura's
// default: every move's E word is a position) and relative extrusion (M83).
func benchInputs(b *testing.B) []testutil.Fixture {
	abs := testutil.Fixture{Name: "absolute-E-101MB",
		Path: filepath.Join(testutil.SharedDir(b), "bench", "prusaslicer_vase_absolute_e_100mb.gcode.gz")}
	for _, f := range testutil.Fixtures(b) {
		if strings.Contains(f.Name, "30mb") {
			f.Name = "relative-E-30MB"
			return []testutil.Fixture{abs, f}
		}
	}
	b.Fatal("no 30 MB fixture")
	return nil
}

// BenchmarkRunCBC: the whole AES-256-CBC path, as make bench runs it in a
// child process (ciphertext read from a memfd, G-code sealed into one), on
// both kinds of slicer output: the default, from a lowered thread as the
// job engine runs it, and the chunk sizes around the default. With
// -cpuprofile it shows where a job's CPU goes.
func BenchmarkRunCBC(b *testing.B) {
	for _, f := range benchInputs(b) {
		b.Run(f.Name, func(b *testing.B) {
			src := f.Bytes(b)
			j := newJob(b, src)
			ct, err := memfd.Create("bench-ciphertext")
			if err != nil {
				b.Fatal(err)
			}
			defer ct.Close()
			if _, err := ct.Write(j.body); err != nil {
				b.Fatal(err)
			}
			j.body = nil
			for _, c := range []struct {
				name string
				opts jobcrypt.StreamOptions
				low  bool
			}{
				{"default", jobcrypt.StreamOptions{}, false},
				// The job engine's case: Run on a thread of lowered
				// priority, so threadprio.Go gives each goroutine a locked
				// thread of its own (only the I/O priority is lowered
				// here, so that the CPU share is the same as default's).
				{"lowered-thread", jobcrypt.StreamOptions{}, true},
				{"256KiB-chunks", jobcrypt.StreamOptions{ChunkSize: 256 << 10}, false},
				{"1MiB-chunks", jobcrypt.StreamOptions{ChunkSize: 1 << 20}, false},
			} {
				b.Run(c.name, func(b *testing.B) {
					if !c.low {
						benchRun(b, j, ct, c.opts, len(src))
						return
					}
					done := make(chan struct{})
					go func() {
						defer close(done)
						runtime.LockOSThread() // never unlocked: the thread is lowered
						if err := threadprio.SetIOPrio(threadprio.IOPrioBestEffortLowest); err != nil {
							b.Error(err)
							return
						}
						benchRun(b, j, ct, c.opts, len(src))
					}()
					<-done
				})
			}
		})
	}
}

// benchRun reports, besides MB/s, the CPU time per GB of G-code and the
// cores in use on average: how well the passes overlap.
func benchRun(b *testing.B, j *job, ct *memfd.File, o jobcrypt.StreamOptions, size int) {
	b.SetBytes(int64(size))
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	for b.Loop() {
		body, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ct.Fd()))
		if err != nil {
			b.Fatal(err)
		}
		res, err := Run(context.Background(), Input{Body: body, Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv, Stream: o})
		body.Close()
		if err != nil {
			b.Fatal(err)
		}
		res.File.Close()
	}
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(size)/1e9), "cpu-s/GB")
	b.ReportMetric(cpu.Seconds()/b.Elapsed().Seconds(), "cores")
}
