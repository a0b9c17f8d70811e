package jobcrypt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// withKernel runs f once per CBC kernel this machine has: the hardware one
// (where the CPU has the instructions) and crypto/cipher's, forced.
func withKernel(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	saved := useHardwareCBC
	t.Cleanup(func() { useHardwareCBC = saved })
	if hardwareCBCAvailable {
		useHardwareCBC = true
		t.Run("hardware", f)
	}
	useHardwareCBC = false
	t.Run("stdlib", f)
}

// The stream suites again, with each kernel in turn.
func TestCBCVectorsEachKernel(t *testing.T)       { withKernel(t, TestCBCVectors) }
func TestCBCErrorVectorsEachKernel(t *testing.T)  { withKernel(t, TestCBCErrorVectors) }
func TestFernetVectorsEachKernel(t *testing.T)    { withKernel(t, TestFernetVectors) }
func TestDecryptCBCLargeEachKernel(t *testing.T)  { withKernel(t, TestDecryptCBCLargeParallel) }
func TestFernetRoundTripEachKernel(t *testing.T)  { withKernel(t, TestFernetRoundTripLarge) }
func TestDecryptCBCMemoryEachKernel(t *testing.T) { withKernel(t, TestDecryptCBCFixedMemory) }

// The stream's boundaries (chunk, segment, held-back block) meet the
// kernel's groups of eight at every phase: chunk sizes not a multiple of
// 128 bytes, worker counts that split chunks into odd segments.
func TestDecryptCBCKernelBoundaries(t *testing.T) {
	withKernel(t, func(t *testing.T) {
		key, iv := randomKeyIV(t)
		pt := make([]byte, 3<<20+5)
		rand.Read(pt)
		ct := encryptCBC(key, iv, pt)
		for _, o := range []StreamOptions{
			{ChunkSize: 16},
			{ChunkSize: 7 * 16},
			{ChunkSize: 9 * 16, Workers: 3},
			{ChunkSize: 64<<10 + 3*16, Workers: 2},
			{ChunkSize: 1<<20 + 5*16, Workers: 3},
		} {
			var out bytes.Buffer
			n, err := DecryptCBC(&out, bytes.NewReader(ct), key, iv, o)
			if err != nil || n != int64(len(pt)) || !bytes.Equal(out.Bytes(), pt) {
				t.Fatalf("%+v: err %v, n %d, equal %v", o, err, n, bytes.Equal(out.Bytes(), pt))
			}
		}
	})
}

// BenchmarkCBCDecryptStream decrypts a 64 MiB stream (DecryptCBC into
// io.Discard) with each kernel this build has, on one worker and on
// DefaultWorkers' choice for a CPU without AES instructions (every core).
// With -tags purego the stdlib kernel is crypto/aes's portable Go code:
// what boards without AES instructions (Raspberry Pi 3, 4, Zero 2) run,
// so `go test -tags purego -bench CBCDecryptStream` estimates their cost
// per byte (see the README's performance section).
func BenchmarkCBCDecryptStream(b *testing.B) {
	var key [32]byte
	var iv [16]byte
	rand.Read(key[:])
	ct := make([]byte, 64<<20)
	rand.Read(ct)
	saved := useHardwareCBC
	b.Cleanup(func() { useHardwareCBC = saved })
	kernels := []bool{false}
	if hardwareCBCAvailable {
		kernels = append(kernels, true)
	}
	for _, hw := range kernels {
		name := "stdlib"
		if hw {
			name = "hardware"
		}
		for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
			b.Run(fmt.Sprintf("%s/workers=%d", name, workers), func(b *testing.B) {
				useHardwareCBC = hw
				b.SetBytes(int64(len(ct)))
				for b.Loop() {
					// The padding of random bytes is wrong: only the
					// last block's check fails, after all the work.
					if _, err := DecryptCBC(io.Discard, bytes.NewReader(ct), &key, &iv, StreamOptions{Workers: workers}); err != nil && !errors.Is(err, ErrPadding) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
