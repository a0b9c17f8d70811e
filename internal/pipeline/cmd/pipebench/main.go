// Command pipebench measures the job pipeline against openssl on the same
// ciphertext, for make bench (scripts/bench.sh).
//
// The parent builds the ciphertext of a large G-code input (the 30 MB slicer
// fixture repeated) in a memfd, in memory only, then runs, as separate
// processes so that each one's peak RSS is its own:
//
//	pipebench run                 pipeline.Run: fd 3 ciphertext → memfd
//	openssl enc -d -aes-256-cbc   stdin ciphertext → stdout memfd
//
// Both read a fresh read-only open of the ciphertext memfd and write into a
// memfd; wall time and peak RSS (getrusage ru_maxrss) are taken by the
// parent for both alike. Neither process writes a file.
//
// Memfd pages are not in either RSS: both write their memfd with write(2)
// and never map it, so its pages are shmem page cache, charged to the file,
// not to the process. The one mapping the pipeline makes is Lock's mlock
// after sealing; the measured child runs without CAP_IPC_LOCK (setpriv, when
// the parent is root) under the default 8 MiB RLIMIT_MEMLOCK, as the
// hardened service does, so that mapping is refused before any page is
// touched (and logged once). The child prints its RssShmem at exit to show
// that no memfd page is mapped.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/pipeline"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "pipebench run:", err)
			os.Exit(1)
		}
		return
	}
	if err := parent(); err != nil {
		fmt.Fprintln(os.Stderr, "pipebench:", err)
		os.Exit(1)
	}
}

// childReport is what the measured child prints on stdout.
type childReport struct {
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Seals      int    `json:"seals"`
	Locked     bool   `json:"locked"`
	RssShmemKB int64  `json:"rss_shmem_kb"`
	VmHWMKB    int64  `json:"vm_hwm_kb"`
}

// child runs the pipeline on fd 3 (ciphertext); fd 4 carries the secrets
// (printer private key, IV, DEK package), never argv or the environment.
func child() error {
	secrets, err := io.ReadAll(os.NewFile(4, "secrets"))
	if err != nil {
		return err
	}
	if len(secrets) < 48 {
		return fmt.Errorf("secrets pipe: %d bytes", len(secrets))
	}
	var priv [32]byte
	var iv [16]byte
	copy(priv[:], secrets[:32])
	copy(iv[:], secrets[32:48])
	pkg := string(secrets[48:])
	clear(secrets)

	res, err := pipeline.Run(context.Background(), pipeline.Input{
		Body:   os.NewFile(3, "ciphertext"),
		Key:    pipeline.DEKPackage(pkg, &priv),
		IV:     &iv,
		Name:   "pipebench",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	clear(priv[:])
	if err != nil {
		return err
	}
	defer res.File.Close()
	seals, err := res.File.Seals()
	if err != nil {
		return err
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childReport{
		Size: res.Size, SHA256: hex.EncodeToString(res.SHA256[:]), Seals: seals, Locked: res.Locked,
		RssShmemKB: statusKB(status, "RssShmem:"), VmHWMKB: statusKB(status, "VmHWM:"),
	})
}

func statusKB(status []byte, key string) int64 {
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

type input struct {
	ct      *memfd.File
	size    int64 // plaintext bytes
	sha     [32]byte
	key     [32]byte
	iv      [16]byte
	priv    [32]byte
	pkg     string
	repeats int
}

type measurement struct {
	wall   time.Duration
	maxRSS int64 // KiB
	report *childReport
}

func parent() error {
	sizes := flag.String("sizes", "100,400", "input sizes in MB (10^6 bytes), comma-separated; each is rounded up to whole copies of the fixture")
	runs := flag.Int("runs", 3, "runs per measurement; the median is reported")
	fixture := flag.String("fixture", "", "G-code to repeat (default: $LMNTD_SHARED/fixtures/prusaslicer_knurled_vase_30mb.gcode.gz)")
	flag.Parse()
	if *fixture == "" {
		shared := os.Getenv("LMNTD_SHARED")
		if shared == "" {
			return fmt.Errorf("set LMNTD_SHARED or -fixture")
		}
		*fixture = filepath.Join(shared, "fixtures", "prusaslicer_knurled_vase_30mb.gcode.gz")
	}
	fixtureSize, err := fixtureLen(*fixture)
	if err != nil {
		return err
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	var mbs []int
	for s := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -sizes %q", *sizes)
		}
		mbs = append(mbs, n)
	}

	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("pipebench: %s repeated; %d run(s) each, median; %d CPUs; load average %s\n",
		filepath.Base(*fixture), *runs, runtimeProcs(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-10s %-34s %10s %14s %s\n", "input", "decryptor → memfd", "MB/s", "peak RSS MiB", "notes")
	for _, mb := range mbs {
		in, err := buildInput(*fixture, fixtureSize, int64(mb)*1_000_000)
		if err != nil {
			return err
		}
		pipe, err := measure(*runs, func() (measurement, error) { return runPipeline(self, in) })
		if err != nil {
			in.ct.Close()
			return err
		}
		label := fmt.Sprintf("%.0f MB", float64(in.size)/1e6)
		note := fmt.Sprintf("sealed %#x, mlock %v, RssShmem %d kB", pipe.report.Seals, lockNote(pipe.report.Locked), pipe.report.RssShmemKB)
		fmt.Printf("%-10s %-34s %10.0f %14.1f %s\n", label, "lmntd pipeline (gate+SHA-256)", mbps(in.size, pipe.wall), kib2mib(pipe.maxRSS), note)
		ssl, err := measure(*runs, func() (measurement, error) { return runOpenSSL(openssl, in) })
		in.ct.Close()
		if err != nil {
			return err
		}
		fmt.Printf("%-10s %-34s %10.0f %14.1f %s\n", label, "openssl enc -d -aes-256-cbc", mbps(in.size, ssl.wall), kib2mib(ssl.maxRSS), "output SHA-256 verified")
		fmt.Printf("%-10s %-34s %10.2fx %13.2fx\n", label, "ratio pipeline / openssl", float64(ssl.wall)/float64(pipe.wall), float64(pipe.maxRSS)/float64(ssl.maxRSS))
		fmt.Printf("%-10s %-34s %10s %14.1f %s\n", label, "pipeline child's own VmHWM", "", float64(pipe.report.VmHWMKB)/1024, "after exec: its address space only")
	}
	fmt.Printf("\nMB = 10^6 bytes; wall time from start to exit of each process (GNU time + process start included for both).\n" +
		"Peak RSS: ru_maxrss as GNU time reports it. Memfd pages are in neither RSS: both write their memfd\n" +
		"with write(2) and never map it (RssShmem 0 kB at the pipeline's exit); the pipeline's mlock mapping\n" +
		"is refused before it touches a page, as the child runs without CAP_IPC_LOCK (like the service).\n")
	return nil
}

func lockNote(locked bool) string {
	if locked {
		return "locked"
	}
	return "refused (no CAP_IPC_LOCK)"
}

func runtimeProcs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
func kib2mib(k int64) float64               { return float64(k) / 1024 }

// measure runs f n times and returns the run with the median wall time
// (and the largest peak RSS seen, so RSS is never understated).
func measure(n int, f func() (measurement, error)) (measurement, error) {
	var ms []measurement
	var maxRSS int64
	for range n {
		m, err := f()
		if err != nil {
			return m, err
		}
		maxRSS = max(maxRSS, m.maxRSS)
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b measurement) int { return int(a.wall - b.wall) })
	m := ms[len(ms)/2]
	m.maxRSS = maxRSS
	return m, nil
}

// openFixture streams the fixture's G-code (gunzipped if need be). The
// launcher never holds a whole input: its peak RSS becomes the floor of
// every child's ru_maxrss (a child's exec starts from the launcher's
// address space, vfork-style), so it must stay small.
func openFixture(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

func fixtureLen(path string) (int64, error) {
	r, err := openFixture(path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return io.Copy(io.Discard, r)
}

// buildInput encrypts gcode repeated up to at least size bytes into a memfd,
// as the marketplace would: a fresh DEK and IV, the DEK boxed to a fresh
// printer key.
func buildInput(fixture string, fixtureSize, size int64) (*input, error) {
	in := &input{repeats: int((size + fixtureSize - 1) / fixtureSize)}
	rand.Read(in.key[:])
	rand.Read(in.iv[:])
	rand.Read(in.priv[:])
	pub, err := curve25519.X25519(in.priv[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	ephPub, ephPriv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	enc := base64.StdEncoding.EncodeToString
	in.pkg = enc(ephPub[:]) + ":" + enc(nonce[:]) + ":" + enc(box.Seal(nil, in.key[:], &nonce, (*[32]byte)(pub), ephPriv))

	ct, err := memfd.Create("pipebench-ciphertext")
	if err != nil {
		return nil, err
	}
	block, _ := aes.NewCipher(in.key[:])
	cbc := cipher.NewCBCEncrypter(block, in.iv[:])
	h := sha256.New()
	buf := make([]byte, 0, 1<<20+aes.BlockSize)
	flush := func(final bool) error {
		n := len(buf) - len(buf)%aes.BlockSize
		if final {
			pad := aes.BlockSize - len(buf)%aes.BlockSize
			buf = append(buf, bytes.Repeat([]byte{byte(pad)}, pad)...)
			n = len(buf)
		}
		cbc.CryptBlocks(buf[:n], buf[:n])
		if _, err := ct.Write(buf[:n]); err != nil {
			return err
		}
		buf = append(buf[:0], buf[n:]...)
		return nil
	}
	for range in.repeats {
		if err := encryptOnce(fixture, &buf, h, flush); err != nil {
			ct.Close()
			return nil, err
		}
	}
	if err := flush(true); err != nil {
		ct.Close()
		return nil, err
	}
	in.ct = ct
	in.size = int64(in.repeats) * fixtureSize
	copy(in.sha[:], h.Sum(nil))
	return in, nil
}

// encryptOnce appends one copy of the fixture to the staging buffer,
// flushing whole MiBs to the encryptor.
func encryptOnce(fixture string, buf *[]byte, h io.Writer, flush func(bool) error) error {
	r, err := openFixture(fixture)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		free := (*buf)[len(*buf) : cap(*buf)-aes.BlockSize]
		n, err := r.Read(free)
		h.Write(free[:n])
		*buf = (*buf)[:len(*buf)+n]
		if len(*buf) >= 1<<20 {
			if ferr := flush(false); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// timed runs argv under GNU time, which reports the command's peak RSS
// (ru_maxrss from wait4) on stderr. GNU time starts the command with a real
// fork, so the figure has GNU time's own small footprint as its floor; a
// direct child of this Go launcher would instead inherit the launcher's
// peak (Go's exec shares the parent's address space until the exec).
func timed(argv ...string) *exec.Cmd {
	return exec.Command("/usr/bin/time", append([]string{"-f", "maxrss_kb=%M"}, argv...)...)
}

// maxRSS takes GNU time's last line off the command's stderr.
func maxRSS(stderr string) (int64, string, error) {
	stderr = strings.TrimRight(stderr, "\n")
	i := strings.LastIndexByte(stderr, '\n')
	rest, last := "", stderr
	if i >= 0 {
		rest, last = stderr[:i], stderr[i+1:]
	}
	v, ok := strings.CutPrefix(last, "maxrss_kb=")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		return 0, "", fmt.Errorf("no peak RSS from GNU time in %q", stderr)
	}
	return n, rest, nil
}

// reopen gives a child its own read-only file description of the
// ciphertext, at offset 0.
func (in *input) reopen() (*os.File, error) {
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", in.ct.Fd()))
}

func runPipeline(self string, in *input) (measurement, error) {
	ct, err := in.reopen()
	if err != nil {
		return measurement{}, err
	}
	defer ct.Close()
	sr, sw, err := os.Pipe()
	if err != nil {
		return measurement{}, err
	}
	defer sr.Close()
	argv := []string{self, "run"}
	if os.Geteuid() == 0 {
		// As the service: no CAP_IPC_LOCK, so RLIMIT_MEMLOCK applies.
		argv = append([]string{"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"}, argv...)
	}
	cmd := timed(argv...)
	cmd.ExtraFiles = []*os.File{ct, sr}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		sw.Close()
		return measurement{}, err
	}
	secrets := append(append(append([]byte(nil), in.priv[:]...), in.iv[:]...), in.pkg...)
	_, werr := sw.Write(secrets)
	sw.Close()
	clear(secrets)
	err = cmd.Wait()
	wall := time.Since(start)
	if werr != nil {
		return measurement{}, werr
	}
	if err != nil {
		return measurement{}, fmt.Errorf("pipeline child: %v: %s", err, errb.String())
	}
	var rep childReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return measurement{}, fmt.Errorf("pipeline child output %q: %v", out.String(), err)
	}
	if rep.Size != in.size || rep.SHA256 != hex.EncodeToString(in.sha[:]) {
		return measurement{}, fmt.Errorf("pipeline output differs from the input: %d bytes, sha256 %s", rep.Size, rep.SHA256)
	}
	rss, rest, err := maxRSS(errb.String())
	if err != nil {
		return measurement{}, err
	}
	if rest != "" && !strings.Contains(rest, "cannot lock") {
		return measurement{}, fmt.Errorf("pipeline child stderr: %s", rest)
	}
	return measurement{wall: wall, maxRSS: rss, report: &rep}, nil
}

// runOpenSSL decrypts with openssl enc into a memfd. The throwaway
// benchmark key is on openssl's argv, as openssl enc requires; no real key
// ever is.
func runOpenSSL(openssl string, in *input) (measurement, error) {
	ct, err := in.reopen()
	if err != nil {
		return measurement{}, err
	}
	defer ct.Close()
	fd, err := unix.MemfdCreate("pipebench-openssl", unix.MFD_CLOEXEC)
	if err != nil {
		return measurement{}, err
	}
	outFile := os.NewFile(uintptr(fd), "openssl-out") // owns fd from here
	defer outFile.Close()
	cmd := timed(openssl, "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(in.key[:]), "-iv", hex.EncodeToString(in.iv[:]))
	cmd.Stdin, cmd.Stdout = ct, outFile
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return measurement{}, fmt.Errorf("openssl: %v: %s", err, errb.String())
	}
	size, sum, err := hashFile(outFile)
	if err != nil {
		return measurement{}, err
	}
	if size != in.size || sum != in.sha {
		return measurement{}, fmt.Errorf("openssl output differs from the input (%d bytes)", size)
	}
	rss, _, err := maxRSS(errb.String())
	if err != nil {
		return measurement{}, err
	}
	return measurement{wall: wall, maxRSS: rss}, nil
}

func hashFile(f *os.File) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
	return n, [32]byte(h.Sum(nil)), err
}
