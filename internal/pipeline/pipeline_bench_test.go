package pipeline

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// BenchmarkRunCBC: the whole AES-256-CBC path, as make bench runs it in a
// child process (ciphertext read from a memfd, G-code sealed into one), on
// the largest slicer fixture. With -cpuprofile it shows where a job's CPU
// goes.
func BenchmarkRunCBC(b *testing.B) {
	var src []byte
	for _, f := range testutil.Fixtures(b) {
		if strings.Contains(f.Name, "30mb") {
			src = f.Bytes(b)
		}
	}
	if src == nil {
		b.Fatal("no 30 MB fixture")
	}
	j := newJob(b, src)
	ct, err := memfd.Create("bench-ciphertext")
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	if _, err := ct.Write(j.body); err != nil {
		b.Fatal(err)
	}
	// The default chunk, and jobcrypt's larger one it was chosen over.
	for _, c := range []struct {
		name string
		opts jobcrypt.StreamOptions
	}{
		{"default", jobcrypt.StreamOptions{}},
		{"512KiB-chunks", jobcrypt.StreamOptions{ChunkSize: jobcrypt.DefaultChunkSize}},
	} {
		b.Run(c.name, func(b *testing.B) { benchRun(b, j, ct, c.opts, len(src)) })
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
