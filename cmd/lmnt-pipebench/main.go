// Command lmnt-pipebench measures the job pipeline against openssl on the same
// ciphertext, for make bench (scripts/bench.sh).
//
// Inputs are real slicer G-code of both kinds the gate treats differently:
// absolute extrusion (M82, PrusaSlicer's and Cura's default; the 101 MB
// file of shared/bench) and relative extrusion (M83; the 30 MB fixture),
// each repeated to about the sizes asked for (100 and 400 MB). The parent
// encrypts each input into a memfd, in memory only, then runs, as separate
// processes so that each one's peak RSS is its own, alternately (so that
// the machine's other load falls on both alike):
//
//	lmnt-pipebench run            pipeline.Run: fd 3 ciphertext → memfd
//	openssl enc -d -aes-256-cbc   stdin ciphertext → stdout memfd
//
// Both read a fresh read-only open of the ciphertext memfd and write into a
// memfd; wall time and peak RSS (getrusage ru_maxrss) are taken by the
// parent for both alike, and the parent checks both outputs (the pipeline
// child passes its sealed memfd back over a socket). Neither process writes
// a file.
//
// With -e2e, the whole download path too: the parent runs the marketplace
// simulator (internal/marketsim) over loopback HTTPS with a paired printer
// and one job queued, and times
//
//	lmnt-pipebench fetch          marketplace client poll + download → pipeline.Run → sealed memfd
//	curl | openssl enc -d         the job's download URL → memfd
//
// The e2e part keeps the printer's token file in a temporary directory (as
// the daemon keeps it in its state directory), removed at the end.
//
// Memfd pages are not in either RSS: both write their memfd with write(2)
// and never map it, so its pages are shmem page cache, charged to the file,
// not to the process. The one mapping the pipeline makes is Lock's mlock
// after sealing; the measured child runs without CAP_IPC_LOCK (setpriv, when
// the parent is root) under the default 8 MiB RLIMIT_MEMLOCK, as the
// hardened service does, so that mapping is refused before any page is
// touched (and logged once). The child reports its RssShmem at exit to show
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
	"net"
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
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "run":
		err = child()
	case len(os.Args) > 1 && os.Args[1] == "fetch":
		err = fetchChild(os.Args[2:])
	default:
		if err = parent(); err != nil {
			fmt.Fprintln(os.Stderr, "lmnt-pipebench:", err)
			os.Exit(1)
		}
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lmnt-pipebench child:", err)
		os.Exit(1)
	}
}

// Descriptors a measured child inherits (os/exec ExtraFiles start at 3).
const (
	fdCiphertext = 3 // run: the ciphertext
	fdSecrets    = 4 // printer private key, IV, DEK package; never argv or the environment
	fdResult     = 5 // SOCK_SEQPACKET: the report and the sealed memfd go back on it
)

// childReport is what a measured child sends back with its memfd.
type childReport struct {
	Size       int64 `json:"size"`
	Locked     bool  `json:"locked"`
	RssShmemKB int64 `json:"rss_shmem_kb"`
	VmHWMKB    int64 `json:"vm_hwm_kb"`
}

// readSecrets takes the printer key, the IV and the DEK package off fd 4.
func readSecrets() (priv [32]byte, iv [16]byte, pkg string, err error) {
	secrets, err := io.ReadAll(os.NewFile(fdSecrets, "secrets"))
	if err != nil {
		return priv, iv, "", err
	}
	defer clear(secrets)
	if len(secrets) < 48 {
		return priv, iv, "", fmt.Errorf("secrets pipe: %d bytes", len(secrets))
	}
	copy(priv[:], secrets[:32])
	copy(iv[:], secrets[32:48])
	return priv, iv, string(secrets[48:]), nil
}

// child runs the pipeline on fd 3 (ciphertext).
func child() error {
	priv, iv, pkg, err := readSecrets()
	if err != nil {
		return err
	}
	res, err := pipeline.Run(context.Background(), pipeline.Input{
		Body:   os.NewFile(fdCiphertext, "ciphertext"),
		Key:    pipeline.DEKPackage(pkg, &priv),
		IV:     &iv,
		Name:   "pipebench",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	clear(priv[:])
	if err != nil {
		return err
	}
	return sendResult(res)
}

// sendResult passes the sealed memfd and the report back to the parent,
// which checks the content as it checks openssl's.
func sendResult(res *pipeline.Result) error {
	defer res.File.Close()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	conn, err := net.FileConn(os.NewFile(fdResult, "result"))
	if err != nil {
		return err
	}
	defer conn.Close()
	return memfd.SendJSON(conn.(*net.UnixConn), childReport{
		Size: res.Size, Locked: res.Locked,
		RssShmemKB: statusKB(status, "RssShmem:"), VmHWMKB: statusKB(status, "VmHWM:"),
	}, res.File.Fd())
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

// source is one slicer file the inputs repeat.
type source struct {
	label string // what kind of G-code it is
	path  string
	size  int64 // uncompressed bytes
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
	cpu    time.Duration // user + system
	maxRSS int64         // KiB
	report *childReport
}

func parent() error {
	sizes := flag.String("sizes", "100,400", "input sizes in MB (10^6 bytes), comma-separated; each is rounded up to whole copies of the source")
	runs := flag.Int("runs", 3, "runs per measurement, pipeline and reference alternating; medians are reported")
	kinds := flag.String("inputs", "absolute,relative", "which G-code to repeat: absolute (shared/bench, M82) and/or relative (shared/fixtures, M83)")
	e2e := flag.Bool("e2e", false, "also measure end to end: simulator over loopback HTTPS → sealed memfd, against curl | openssl")
	e2eRuns := flag.Int("e2e-runs", 9, "runs of the end-to-end measurement (more than -runs: it varies more with the machine's load)")
	flag.Parse()
	shared := os.Getenv("LMNTD_SHARED")
	if shared == "" {
		return fmt.Errorf("set LMNTD_SHARED")
	}
	var sources []source
	for k := range strings.SplitSeq(*kinds, ",") {
		switch strings.TrimSpace(k) {
		case "absolute":
			sources = append(sources, source{label: "absolute E", path: filepath.Join(shared, "bench", "prusaslicer_vase_absolute_e_100mb.gcode.gz")})
		case "relative":
			sources = append(sources, source{label: "relative E", path: filepath.Join(shared, "fixtures", "prusaslicer_knurled_vase_30mb.gcode.gz")})
		default:
			return fmt.Errorf("bad -inputs %q", *kinds)
		}
	}
	for i := range sources {
		n, err := fixtureLen(sources[i].path)
		if err != nil {
			return err
		}
		sources[i].size = n
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
	fmt.Printf("lmnt-pipebench: %d run(s) each, pipeline and reference alternating; medians, ratio range in brackets;\n"+
		"%d CPUs, load average %s at start\n", *runs, runtimeProcs(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-24s %-32s %7s %8s %13s %s\n", "input", "decryptor → memfd", "MB/s", "CPU s/GB", "peak RSS MiB", "notes")
	for _, src := range sources {
		for _, mb := range mbs {
			if err := compare(self, openssl, src, int64(mb)*1_000_000, *runs); err != nil {
				return err
			}
		}
	}
	fmt.Printf("\nratio = openssl's wall time / the pipeline's (higher is better), run by run, runs taken alternately.\n" +
		"MB = 10^6 bytes of G-code; wall time from start to exit of each process (process start included for both);\n" +
		"CPU s/GB: user + system time of the median run per GB of G-code, which the machine's other load affects less.\n" +
		"Peak RSS: ru_maxrss as GNU time reports it. Memfd pages are in neither RSS: both write their memfd\n" +
		"with write(2) and never map it (RssShmem 0 kB at the pipeline's exit); the pipeline's mlock mapping\n" +
		"is refused before it touches a page, as the child runs without CAP_IPC_LOCK (like the service).\n")
	if *e2e {
		return endToEnd(self, sources[0], *e2eRuns)
	}
	return nil
}

// compare measures the pipeline and openssl on one input, alternately.
func compare(self, openssl string, src source, size int64, runs int) error {
	in, err := buildInput(src, size)
	if err != nil {
		return err
	}
	defer in.ct.Close()
	var pipe, ssl []measurement
	for range runs {
		p, err := runPipeline(self, in)
		if err != nil {
			return err
		}
		o, err := runOpenSSL(openssl, in)
		if err != nil {
			return err
		}
		pipe, ssl = append(pipe, p), append(ssl, o)
	}
	label := fmt.Sprintf("%.0f MB %s", float64(in.size)/1e6, src.label)
	p, o := median(pipe), median(ssl)
	note := fmt.Sprintf("sealed, mlock %v, RssShmem %d kB, VmHWM %.1f MiB", lockNote(p.report.Locked), p.report.RssShmemKB, float64(p.report.VmHWMKB)/1024)
	row(label, "lmntd pipeline (gate+metadata)", in.size, p, kib2mib(maxRSS(pipe)), note)
	row(label, "openssl enc -d -aes-256-cbc", in.size, o, kib2mib(maxRSS(ssl)), "output SHA-256 verified for both")
	lo, mid, hi := ratios(pipe, ssl)
	fmt.Printf("%-24s %-32s %6.2fx  [%.2f–%.2f]\n", label, "ratio pipeline vs openssl", mid, lo, hi)
	return nil
}

func row(label, what string, size int64, m measurement, rssMiB float64, note string) {
	rss := "-"
	if rssMiB > 0 {
		rss = fmt.Sprintf("%.1f", rssMiB)
	}
	fmt.Printf("%-24s %-32s %7.0f %8.2f %13s %s\n", label, what, mbps(size, m.wall), m.cpu.Seconds()/(float64(size)/1e9), rss, note)
}

// ratios are openssl's time over the pipeline's, run by run: the median,
// lowest and highest.
func ratios(pipe, ref []measurement) (lo, mid, hi float64) {
	var rs []float64
	for i := range pipe {
		rs = append(rs, float64(ref[i].wall)/float64(pipe[i].wall))
	}
	slices.Sort(rs)
	return rs[0], rs[len(rs)/2], rs[len(rs)-1]
}

func median(ms []measurement) measurement {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measurement) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

// maxRSS is the largest peak RSS of the runs, so RSS is never understated.
func maxRSS(ms []measurement) int64 {
	var m int64
	for _, x := range ms {
		m = max(m, x.maxRSS)
	}
	return m
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

// newKeys makes what the marketplace would: a fresh DEK and IV, the DEK
// boxed to a fresh printer key.
func newKeys(in *input) error {
	rand.Read(in.key[:])
	rand.Read(in.iv[:])
	rand.Read(in.priv[:])
	pub, err := curve25519.X25519(in.priv[:], curve25519.Basepoint)
	if err != nil {
		return err
	}
	ephPub, ephPriv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	enc := base64.StdEncoding.EncodeToString
	in.pkg = enc(ephPub[:]) + ":" + enc(nonce[:]) + ":" + enc(box.Seal(nil, in.key[:], &nonce, (*[32]byte)(pub), ephPriv))
	return nil
}

// buildInput encrypts the source repeated up to at least size bytes into a
// memfd.
func buildInput(src source, size int64) (*input, error) {
	in := &input{repeats: int((size + src.size - 1) / src.size)}
	if err := newKeys(in); err != nil {
		return nil, err
	}
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
		if err := encryptOnce(src.path, &buf, h, flush); err != nil {
			ct.Close()
			return nil, err
		}
	}
	if err := flush(true); err != nil {
		ct.Close()
		return nil, err
	}
	in.ct = ct
	in.size = int64(in.repeats) * src.size
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
	return exec.Command("/usr/bin/time", append([]string{"-f", "maxrss_kb=%M cpu_s=%U %S"}, argv...)...)
}

// gnuTime takes GNU time's last line off the command's stderr: peak RSS
// and CPU time (user + system).
func gnuTime(stderr string) (rssKB int64, cpu time.Duration, rest string, err error) {
	stderr = strings.TrimRight(stderr, "\n")
	i := strings.LastIndexByte(stderr, '\n')
	last := stderr
	if i >= 0 {
		rest, last = stderr[:i], stderr[i+1:]
	}
	var user, sys float64
	if _, err := fmt.Sscanf(last, "maxrss_kb=%d cpu_s=%g %g", &rssKB, &user, &sys); err != nil {
		return 0, 0, "", fmt.Errorf("no peak RSS and CPU time from GNU time in %q", stderr)
	}
	return rssKB, time.Duration((user + sys) * float64(time.Second)), rest, nil
}

// reopen gives a child its own read-only file description of the
// ciphertext, at offset 0.
func (in *input) reopen() (*os.File, error) {
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", in.ct.Fd()))
}

// measuredChild is a pipebench child with the secrets pipe and the result
// socket set up; extra is its fd 3 (the ciphertext, or the simulator's CA
// certificate for fetch).
type measuredChild struct {
	cmd     *exec.Cmd
	secrets *os.File // write end
	result  *net.UnixConn
	stderr  bytes.Buffer
	cpu     time.Duration // user + system, once finished
}

func startChild(self string, extra *os.File, args ...string) (*measuredChild, error) {
	sr, sw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer sr.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		sw.Close()
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "result"), os.NewFile(uintptr(pair[1]), "result-child")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		sw.Close()
		return nil, err
	}
	argv := append([]string{self}, args...)
	if os.Geteuid() == 0 {
		// As the service: no CAP_IPC_LOCK, so RLIMIT_MEMLOCK applies.
		argv = append([]string{"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"}, argv...)
	}
	c := &measuredChild{cmd: timed(argv...), secrets: sw, result: conn.(*net.UnixConn)}
	c.cmd.ExtraFiles = []*os.File{extra, sr, theirs}
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		sw.Close()
		conn.Close()
		return nil, err
	}
	return c, nil
}

// finish waits for the child and takes its memfd; the caller checks and
// closes it.
func (c *measuredChild) finish() (*childReport, *os.File, int64, error) {
	defer c.result.Close()
	err := c.cmd.Wait()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("pipeline child: %v: %s", err, c.stderr.String())
	}
	buf := make([]byte, 4096)
	n, fds, err := memfd.ReceivePacket(c.result, buf, 1)
	if err != nil {
		return nil, nil, 0, err
	}
	if len(fds) != 1 {
		memfd.CloseFDs(fds)
		return nil, nil, 0, fmt.Errorf("pipeline child sent %d fds", len(fds))
	}
	out := os.NewFile(uintptr(fds[0]), "pipeline-out")
	var rep childReport
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		out.Close()
		return nil, nil, 0, err
	}
	rss, cpu, rest, err := gnuTime(c.stderr.String())
	if err != nil {
		out.Close()
		return nil, nil, 0, err
	}
	c.cpu = cpu
	if rest != "" && !strings.Contains(rest, "cannot lock") {
		out.Close()
		return nil, nil, 0, fmt.Errorf("pipeline child stderr: %s", rest)
	}
	return &rep, out, rss, nil
}

// checkOutput verifies a sealed pipeline output against the plaintext.
func checkOutput(out *os.File, rep *childReport, size int64, sum [32]byte) error {
	seals, err := unix.FcntlInt(out.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return err
	}
	if seals&memfd.ContentSeals != memfd.ContentSeals {
		return fmt.Errorf("pipeline output not sealed (seals %#x)", seals)
	}
	n, got, err := hashFile(out)
	if err != nil {
		return err
	}
	if n != size || rep.Size != size || got != sum {
		return fmt.Errorf("pipeline output differs from the input: %d bytes (reported %d), want %d", n, rep.Size, size)
	}
	return nil
}

func runPipeline(self string, in *input) (measurement, error) {
	ct, err := in.reopen()
	if err != nil {
		return measurement{}, err
	}
	defer ct.Close()
	start := time.Now()
	c, err := startChild(self, ct, "run")
	if err != nil {
		return measurement{}, err
	}
	secrets := append(append(append([]byte(nil), in.priv[:]...), in.iv[:]...), in.pkg...)
	_, werr := c.secrets.Write(secrets)
	c.secrets.Close()
	clear(secrets)
	return c.measured(start, werr, in.size, in.sha)
}

// measured waits for the child started at start, checks the memfd it sent
// against the input's size and digest, and returns the measurement. werr
// is the error of writing the child its secrets.
func (c *measuredChild) measured(start time.Time, werr error, size int64, sum [32]byte) (measurement, error) {
	rep, out, rss, err := c.finish()
	wall := time.Since(start)
	if err != nil {
		return measurement{}, err
	}
	defer out.Close()
	if werr != nil {
		return measurement{}, werr
	}
	if err := checkOutput(out, rep, size, sum); err != nil {
		return measurement{}, err
	}
	return measurement{wall: wall, cpu: c.cpu, maxRSS: rss, report: rep}, nil
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
	rss, cpu, _, err := gnuTime(errb.String())
	if err != nil {
		return measurement{}, err
	}
	return measurement{wall: wall, cpu: cpu, maxRSS: rss}, nil
}

func hashFile(f *os.File) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
	return n, [32]byte(h.Sum(nil)), err
}
