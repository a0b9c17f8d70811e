package jobcrypt

import (
	"bytes"
	"crypto/rand"
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
