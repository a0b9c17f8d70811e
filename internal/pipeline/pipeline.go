// Package pipeline turns one job body into a sealed in-memory G-code file
// in a single streaming pass with fixed memory:
//
//	body ─▶ (AES-256-CBC with the DEK | Fernet | plaintext) ─▶ gate + metadata
//	                                                        └▶ memfd
//
// No digest is computed on the way: the one consumer, the Klipper bridge's
// print packet, hashes the sealed memfd when it hands it over (the extra
// does not check it), so the hash is off the job's critical path.
//
// It composes jobcrypt (decryption), gcode (the gate) and memfd (the sealed
// file). The plaintext exists only in the memfd and in the stream's few
// reused buffers; on any error the memfd is closed, so nothing that failed
// a check is ever released.
package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// Stage names where a run failed. The caller (jobs/adapters) tells the
// failures that say nothing about the plaintext (read, memfd) from the
// rest; the stage of any other failure goes to the debug log only.
type Stage string

const (
	// StageKey: the key material could not be opened (DEK package, Fernet
	// key, IV) or does not fit the body's format.
	StageKey Stage = "key"
	// StageDecrypt: the ciphertext is malformed (length, padding, Fernet
	// token or HMAC).
	StageDecrypt Stage = "decrypt"
	// StageGate: the plaintext is not printable G-code (gcode.RejectError).
	StageGate Stage = "gate"
	// StageMemfd: the in-memory file could not be created, written or sealed.
	StageMemfd Stage = "memfd"
	// StageRead: the body could not be read, or the context ended.
	StageRead Stage = "read"
)

// Error is every error Run returns: the stage, and the cause (errors.Is/As
// reach jobcrypt's, gcode's and memfd's errors, and context.Canceled).
type Error struct {
	Stage Stage
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("pipeline: %s: %v", e.Stage, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// ErrMissingIV is a StageKey cause: an AES-256 DEK came without its IV.
var ErrMissingIV = errors.New("pipeline: AES-256-CBC job has no IV")

// KeySource yields a job's content key. Run calls it once, before reading
// the body, and zeroises the DEK it returns when the stream ends. It is a
// function so that the caller decides how long the printer's private key is
// unsealed: typically just for this call (see DEKPackage).
type KeySource func() (*jobcrypt.DEK, error)

// DEKPackage is a KeySource that opens a marketplace DEK package with the
// printer's private key. priv is read only during the call; the caller may
// zeroise it as soon as Run has returned (or earlier, from another KeySource).
func DEKPackage(pkg string, priv *[32]byte) KeySource {
	return func() (*jobcrypt.DEK, error) { return jobcrypt.OpenDEKPackage(pkg, priv) }
}

// FernetKey is a KeySource for a caller-supplied Fernet key (the local
// start-print endpoint's fernet_key field).
func FernetKey(key string) KeySource {
	return func() (*jobcrypt.DEK, error) {
		k, err := jobcrypt.ParseFernetKey(key)
		if err != nil {
			return nil, err
		}
		defer k.Zero()
		return jobcrypt.FernetDEK(k), nil
	}
}

// Input is one job body and what is needed to turn it into G-code.
type Input struct {
	// Body is the downloaded (or uploaded) body. If it is an io.Closer,
	// Run closes it when ctx ends, to interrupt a read that is blocked.
	Body io.Reader
	// Key yields the content key; nil means the job has no key material,
	// and the body is accepted only as plaintext G-code that passes the gate.
	Key KeySource
	// IV is the job's gcode_iv_hex, parsed (jobcrypt.ParseIVHex); required
	// when the key is an AES-256 DEK.
	IV *[16]byte
	// Name labels the memfd (visible as /proc/<pid>/fd → "memfd:<name>").
	// Default "lmnt-job".
	Name string
	// Gate tunes the G-code gate; Stream tunes the decryption buffers
	// (a zero ChunkSize means 128 KiB here, see chunkSize).
	Gate   gcode.Options
	Stream jobcrypt.StreamOptions
	// Logger receives the once-per-process mlock warning; nil discards.
	Logger *slog.Logger
}

// Result is a successful run. The caller owns File and must Close it.
type Result struct {
	File     *memfd.File // sealed (memfd.FullSeals); locked in RAM if the limit allowed
	Size     int64       // bytes of G-code in File
	Metadata *gcode.Metadata
	Format   jobcrypt.Format // how the body was encoded
	Locked   bool            // whether File's pages are mlocked
}

// lockWarning makes a failed mlock a single log line per process: it is a
// property of the machine (RLIMIT_MEMLOCK), not of a job.
var lockWarning sync.Once

// Run streams in.Body through decryption and the gate into a new memfd,
// seals it and tries to lock it in RAM. Memory use is fixed (a few chunks of
// in.Stream.ChunkSize, 128 KiB by default) whatever the body's size. On error the
// memfd has been closed and the error is an *Error naming the stage.
func Run(ctx context.Context, in Input) (*Result, error) {
	log := in.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := in.Name
	if name == "" {
		name = "lmnt-job"
	}

	var dek *jobcrypt.DEK
	if in.Key != nil {
		d, err := in.Key()
		if err != nil {
			return nil, &Error{StageKey, err}
		}
		dek = d
		defer dek.Zero()
		if dek.Kind == jobcrypt.DEKAES256 && in.IV == nil {
			return nil, &Error{StageKey, ErrMissingIV}
		}
	}

	if c, ok := in.Body.(io.Closer); ok {
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
	}
	body := &bodyReader{ctx: ctx, r: in.Body}
	prefix := make([]byte, jobcrypt.DetectPrefixLen)
	n, err := io.ReadFull(body, prefix)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, readError(ctx, err)
	}
	prefix = prefix[:n]
	format, err := jobcrypt.DetectFormat(prefix, dek)
	if err != nil {
		return nil, &Error{StageKey, err}
	}
	src := io.MultiReader(bytes.NewReader(prefix), body)

	file, err := memfd.Create(name)
	if err != nil {
		return nil, &Error{StageMemfd, err}
	}
	res, err := stream(ctx, file, src, body, format, dek, in)
	if err != nil {
		file.Close()
		return nil, err
	}
	if err := file.Seal(); err != nil {
		file.Close()
		return nil, &Error{StageMemfd, err}
	}
	if err := file.Lock(); err != nil {
		lockWarning.Do(func() {
			log.Warn("cannot lock decrypted G-code in RAM; its pages may be swapped unless the service has MemorySwapMax=0 (raise LimitMEMLOCK to lock them); logged once",
				"err", err)
		})
	}
	res.File = file
	res.Format = format
	res.Locked = file.Locked()
	return res, nil
}

// stream runs the body through the decryption the format needs into the
// sink, then the gate's end-of-stream checks.
func stream(ctx context.Context, file *memfd.File, src io.Reader, body *bodyReader, format jobcrypt.Format, dek *jobcrypt.DEK, in Input) (*Result, error) {
	opts := in.Stream
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = chunkSize
	}
	if opts.Go == nil {
		// Every goroutine of the job runs at the caller's priority: the
		// job engine calls Run on a lowered thread (jobs.runLowPriority).
		opts.Go = threadprio.Go
	}
	s := newSink(ctx, file, in.Gate, opts.Go)
	defer s.close()
	var err error
	switch format {
	case jobcrypt.FormatCBC:
		_, err = jobcrypt.DecryptCBC(s, src, &dek.AES256, in.IV, opts)
	case jobcrypt.FormatFernet:
		_, err = jobcrypt.DecryptFernet(s, src, &dek.Fernet, opts)
	case jobcrypt.FormatPlaintext:
		err = copyPlain(s, src, opts.ChunkSize)
	default:
		err = fmt.Errorf("pipeline: unknown format %v", format)
	}
	if err != nil {
		return nil, s.classify(err, body)
	}
	if err := s.finish(); err != nil {
		return nil, &Error{StageMemfd, err}
	}
	md, err := s.gate.Finish()
	if err != nil {
		return nil, &Error{StageGate, err}
	}
	size, err := file.Size()
	if err != nil {
		return nil, &Error{StageMemfd, err}
	}
	if size != s.size || size != s.written {
		return nil, &Error{StageMemfd, fmt.Errorf("pipeline: memfd holds %d bytes, %d were written, %d accepted", size, s.written, s.size)}
	}
	return &Result{Size: size, Metadata: md}, nil
}

func readError(ctx context.Context, err error) *Error {
	if ctx.Err() != nil {
		return &Error{StageRead, ctx.Err()}
	}
	return &Error{StageRead, err}
}

// bodyReader stops at ctx's end and remembers the body's own failure, so it
// is not mistaken for a decryption error.
type bodyReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// chunkSize is the stream's default chunk: a quarter of jobcrypt's own
// default, because every chunk crosses cores (decrypted on one, gated and
// written on two others) and is read by two passes while it may still be
// in the cache. On the 2-vCPU EPYC of the README's figures (loaded by other
// work, so only CPU time per byte compares), 128 KiB took the least
// (BenchmarkRunCBC, both kinds of G-code: 1.7–2.0 CPU s/GB, against
// 1.9–3.0 at 256 KiB and 1.9–2.5 at 1 MiB); the hand-offs per chunk stay
// negligible.
const chunkSize = 128 << 10

// sink is where plaintext goes. The gate and the memfd's write(2) both only
// read a chunk, so they run at the same time: the gate on the caller's
// goroutine, the write on the sink's writer. Write returns when both are
// done with the chunk, which the decrypter then reuses, so no byte of
// plaintext is copied in user space; meanwhile the decrypter fills the
// next one. A chunk the gate refuses may thus reach the memfd: harmless, as
// Run closes the memfd on any error and never releases it.
type sink struct {
	ctx     context.Context
	gate    *gcode.Inspector
	file    *memfd.File
	chunks  chan []byte // to the writer
	results chan error  // from the writer, one per chunk
	ended   bool

	written  int64 // bytes the memfd took
	size     int64 // bytes the gate accepted
	fileErr  error
	stage    Stage // set when the gate or the memfd refused a write
	stageErr error
}

// newSink starts the sink's writer with spawn (jobcrypt.StreamOptions.Go).
func newSink(ctx context.Context, file *memfd.File, gate gcode.Options, spawn func(func())) *sink {
	s := &sink{
		ctx:     ctx,
		gate:    gcode.NewInspector(gate),
		file:    file,
		chunks:  make(chan []byte),
		results: make(chan error),
	}
	spawn(s.writer)
	return s
}

func (s *sink) writer() {
	for p := range s.chunks {
		n, err := s.file.Write(p)
		s.written += int64(n)
		s.results <- err
	}
}

func (s *sink) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, s.fail(StageRead, err)
	}
	if s.fileErr != nil {
		return 0, s.fail(StageMemfd, s.fileErr)
	}
	s.chunks <- p
	_, gateErr := s.gate.Write(p)
	if err := <-s.results; err != nil {
		s.fileErr = err
		return 0, s.fail(StageMemfd, err)
	}
	if gateErr != nil {
		return 0, s.fail(StageGate, gateErr)
	}
	s.size += int64(len(p))
	return len(p), nil
}

// finish stops the writer and returns the memfd's write error, if any.
func (s *sink) finish() error {
	if !s.ended {
		s.ended = true
		close(s.chunks)
	}
	return s.fileErr
}

func (s *sink) fail(stage Stage, err error) error {
	s.stage, s.stageErr = stage, err
	return err
}

func (s *sink) close() { s.finish() }

// classify names the stage of a stream error: the sink knows whether it
// refused a write, the body reader whether it failed or ctx ended;
// anything else came from the decryption itself. A decrypter may override
// the sink's refusal with its own verdict (Fernet's HMAC: garbage from a
// wrong key fails the gate first, but the cause is the key): then the
// returned error is not the sink's, and the decrypter's stage wins.
func (s *sink) classify(err error, body *bodyReader) *Error {
	switch {
	case s.ctx.Err() != nil:
		return &Error{StageRead, s.ctx.Err()}
	case s.stageErr != nil && errors.Is(err, s.stageErr):
		return &Error{s.stage, s.stageErr}
	case body.err != nil:
		return &Error{StageRead, body.err}
	}
	return &Error{StageDecrypt, err}
}

// copyPlain feeds a plaintext body to the sink in large chunks (io.Copy's
// 32 KiB would multiply the per-write overhead).
func copyPlain(dst io.Writer, src io.Reader, chunk int) error {
	buf := make([]byte, chunk)
	defer clear(buf)
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
