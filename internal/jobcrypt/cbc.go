package jobcrypt

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Errors of the CBC stream.
var (
	ErrEmptyCiphertext  = errors.New("jobcrypt: ciphertext is empty")
	ErrCiphertextLength = errors.New("jobcrypt: ciphertext length is not a multiple of the 16-byte AES block (truncated or not CBC)")
	ErrPadding          = errors.New("jobcrypt: bad PKCS#7 padding (wrong key or IV, or corrupt ciphertext)")
	ErrIV               = errors.New("jobcrypt: IV is not 32 hex characters")
)

// ParseIVHex parses the job's gcode_iv_hex: 32 hex characters, 16 bytes.
func ParseIVHex(s string) ([16]byte, error) {
	var iv [16]byte
	if len(s) != 2*len(iv) {
		return iv, fmt.Errorf("%w: got %d characters", ErrIV, len(s))
	}
	if _, err := hex.Decode(iv[:], []byte(s)); err != nil {
		return iv, fmt.Errorf("%w: %v", ErrIV, err)
	}
	return iv, nil
}

// StreamOptions tunes the stream functions. The zero value is the default.
type StreamOptions struct {
	// ChunkSize is the ciphertext read and decrypted per step, rounded
	// down to whole blocks; 0 means DefaultChunkSize.
	ChunkSize int
	// Buffers is how many chunks are in flight (one being read and
	// decrypted while the others are written); 0 means 3. Memory is about
	// Buffers × ChunkSize and does not grow with the input.
	Buffers int
	// Workers is how many goroutines decrypt one chunk; 0 means
	// DefaultWorkers.
	Workers int
	// Go starts each goroutine the stream needs (its writer and the
	// decrypting helpers); nil means a plain go statement. The job engine
	// passes one that lowers each goroutine's thread priority, as the
	// caller's own, so that no part of a job competes with Klipper.
	Go func(func())
}

// DefaultWorkers decides how many goroutines decrypt one chunk. With AES
// instructions the kernel runs at several GB/s, an order of magnitude above
// everything else a job does (read, gate, write), so a single worker
// suffices and a chunk is not split. Without them (Raspberry Pi 3, 4, Zero
// 2: Cortex-A53/A72 without the cryptography extensions; 32-bit ARM) the
// portable kernel is the slowest pass by far, and splitting each chunk
// across every core is what makes a job fast.
func DefaultWorkers() int {
	if useHardwareCBC {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// DefaultChunkSize is large enough to amortise the per-chunk work
// (goroutine hand-offs, one writer call) and small enough that three of
// them stay well inside the daemon's memory budget.
const DefaultChunkSize = 512 << 10

// minSegment is the least ciphertext a decrypting goroutine gets: below it
// the hand-off costs more than the parallelism gains.
const minSegment = 32 << 10

func (o StreamOptions) withDefaults() StreamOptions {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	o.ChunkSize -= o.ChunkSize % aes.BlockSize
	if o.ChunkSize < aes.BlockSize {
		o.ChunkSize = aes.BlockSize
	}
	if o.Buffers <= 1 {
		o.Buffers = 3
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers()
	}
	if o.Go == nil {
		o.Go = func(f func()) { go f() }
	}
	return o
}

// DecryptCBC streams AES-256-CBC/PKCS#7 ciphertext from src to dst and
// returns the plaintext length written. Memory is fixed (see StreamOptions);
// only the last plaintext block is held back until src reports EOF, when the
// padding is checked and stripped. Chunks are decrypted on several cores
// (CBC decryption of block i needs only ciphertext blocks i and i-1) while
// the previous chunk is being written.
//
// On error, dst has received an unauthenticated prefix of the plaintext:
// the caller must discard it. Errors: ErrEmptyCiphertext,
// ErrCiphertextLength, ErrPadding, or src's or dst's error unchanged.
func DecryptCBC(dst io.Writer, src io.Reader, key *[32]byte, iv *[16]byte, opts StreamOptions) (int64, error) {
	return decryptCBCStream(dst, src, key[:], iv, opts)
}

// decryptCBCStream is the engine shared by DecryptCBC and Fernet; key is
// an AES key (32 bytes for DecryptCBC, 16 for Fernet). The expanded key
// schedule is zeroised when the stream ends, where the kernel allows.
//
// Buffers circulate between this goroutine (fill with ciphertext, decrypt
// in place) and one writer goroutine (dst.Write). Each buffer keeps one
// block of headroom in front, where the previous chunk's held-back last
// plaintext block is copied, so every chunk reaches dst in a single Write.
func decryptCBCStream(dst io.Writer, src io.Reader, key []byte, iv *[16]byte, opts StreamOptions) (int64, error) {
	o := opts.withDefaults()
	const bs = aes.BlockSize
	kernel, err := newCBCKernel(key, o.Workers)
	if err != nil {
		return 0, err // unreachable: the callers' key lengths are fixed by their types
	}
	defer kernel.wipe()

	free := make(chan []byte, o.Buffers)
	for range o.Buffers {
		free <- make([]byte, bs+o.ChunkSize)
	}
	type chunk struct{ buf, out []byte }
	full := make(chan chunk, o.Buffers)

	var (
		written  int64
		writeErr error
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	wg.Add(1)
	o.Go(func() {
		defer wg.Done()
		for c := range full {
			if !failed.Load() {
				n, err := dst.Write(c.out)
				written += int64(n)
				if err == nil && n != len(c.out) {
					err = io.ErrShortWrite
				}
				if err != nil {
					writeErr = err
					failed.Store(true)
				}
			}
			free <- c.buf
		}
	})

	// finish stops the writer and reports its error first: once dst has
	// failed, anything seen later is a consequence, not the cause.
	finish := func(err error) (int64, error) {
		close(full)
		wg.Wait()
		for len(free) > 0 {
			clear(<-free) // plaintext does not linger in freed buffers
		}
		if writeErr != nil {
			return written, writeErr
		}
		return written, err
	}

	dec := newParallelCBC(kernel, o.Workers, o.Go)
	defer dec.close()
	prev := *iv // last ciphertext block before the current chunk
	var held [bs]byte
	haveHeld := false
	var total int64
	for {
		buf := <-free
		if failed.Load() {
			free <- buf
			return finish(nil)
		}
		ct := buf[bs:]
		n, eof, err := fill(src, ct)
		total += int64(n)
		if err != nil {
			free <- buf
			return finish(err)
		}
		if eof && total%bs != 0 {
			free <- buf
			return finish(fmt.Errorf("%w: %d bytes", ErrCiphertextLength, total))
		}
		if eof && total == 0 {
			free <- buf
			return finish(ErrEmptyCiphertext)
		}
		next := prev
		if n > 0 {
			copy(next[:], ct[n-bs:n])
		}
		dec.decrypt(&prev, ct[:n])
		prev = next

		start := bs
		if haveHeld {
			start = 0
			copy(buf[:bs], held[:])
		}
		end := bs + n
		if !eof {
			// Not the last block yet: hold it back, it may be padding.
			copy(held[:], buf[end-bs:end])
			haveHeld = true
			end -= bs
			full <- chunk{buf, buf[start:end]}
			continue
		}
		pad, ok := pkcs7Padding(buf[end-bs : end])
		if !ok {
			clear(buf)
			free <- buf
			return finish(ErrPadding)
		}
		full <- chunk{buf, buf[start : end-pad]}
		return finish(nil)
	}
}

// fill reads until p is full or src ends; a short count comes only with eof.
func fill(src io.Reader, p []byte) (n int, eof bool, err error) {
	for n < len(p) {
		m, err := src.Read(p[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// parallelCBC decrypts chunks in place on several goroutines. CBC
// decryption of a block needs only that block and the ciphertext block
// before it, so a chunk splits into segments whose IVs are the ciphertext
// blocks just before them; all IVs are copied out before any segment is
// overwritten. Segment i uses kernel lane i. The helper goroutines and all
// per-segment state live as long as the stream: nothing is allocated per
// chunk.
type parallelCBC struct {
	kernel cbcKernel
	bounds []int
	ivs    [][aes.BlockSize]byte
	ct     []byte        // the chunk being decrypted
	segs   chan int      // segment numbers, to the helpers
	done   chan struct{} // one per segment a helper has finished
	// helpers: running helper goroutines; close waits for them, so none
	// outlives the stream (nor the kernel's key schedule it reads).
	helpers sync.WaitGroup
}

// newParallelCBC starts workers-1 helpers (the caller's goroutine is the
// first worker); close stops them.
func newParallelCBC(kernel cbcKernel, workers int, spawn func(func())) *parallelCBC {
	p := &parallelCBC{
		kernel: kernel,
		bounds: make([]int, workers+1),
		ivs:    make([][aes.BlockSize]byte, workers),
		segs:   make(chan int, workers),
		done:   make(chan struct{}, workers),
	}
	p.helpers.Add(workers - 1)
	for range workers - 1 {
		spawn(p.helper)
	}
	return p
}

func (p *parallelCBC) helper() {
	defer p.helpers.Done()
	for i := range p.segs {
		p.kernel.decryptBlocks(i, &p.ivs[i], p.ct[p.bounds[i]:p.bounds[i+1]])
		p.done <- struct{}{}
	}
}

// close stops the helpers and waits until they have returned.
func (p *parallelCBC) close() {
	close(p.segs)
	p.helpers.Wait()
}

// decrypt decrypts ct in place, chained to iv.
func (p *parallelCBC) decrypt(iv *[16]byte, ct []byte) {
	const bs = aes.BlockSize
	segs := min(len(p.ivs), len(ct)/minSegment)
	if segs <= 1 {
		p.kernel.decryptBlocks(0, iv, ct)
		return
	}
	per := len(ct) / bs / segs * bs
	for i := range segs {
		p.bounds[i] = i * per
		if i == 0 {
			p.ivs[i] = *iv
		} else {
			copy(p.ivs[i][:], ct[p.bounds[i]-bs:p.bounds[i]])
		}
	}
	p.bounds[segs] = len(ct)
	p.ct = ct
	for i := 1; i < segs; i++ {
		p.segs <- i
	}
	p.kernel.decryptBlocks(0, &p.ivs[0], ct[:p.bounds[1]])
	for i := 1; i < segs; i++ {
		<-p.done
	}
	p.ct = nil
}

// pkcs7Padding validates the PKCS#7 padding of the final block in constant
// time and returns its length.
func pkcs7Padding(last []byte) (int, bool) {
	n := last[len(last)-1]
	good := subtle.ConstantTimeLessOrEq(1, int(n)) & subtle.ConstantTimeLessOrEq(int(n), len(last))
	for i := range len(last) {
		inPad := subtle.ConstantTimeLessOrEq(len(last)-i, int(n))
		good &= subtle.ConstantTimeSelect(inPad, subtle.ConstantTimeByteEq(last[i], n), 1)
	}
	return int(n), good == 1
}
