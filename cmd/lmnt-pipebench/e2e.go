package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/pipeline"
)

// caPath is where a fetch child (and curl) find the simulator's CA
// certificate: the memfd on their fd 3.
const caPath = "/proc/self/fd/3"

// e2eJob is the queued job as both sides see it.
type e2eJob struct {
	sim      *marketsim.Server
	stateDir string
	id       string
	url      string // the signed storage URL (a secret of the job)
	key, iv  [32]byte
	ivHex    string
	priv     [32]byte
	size     int64
	sha      [32]byte
	ca       *memfd.File
}

// endToEnd queues src once in the simulator for a freshly paired printer,
// then times, alternately, the printer side (marketplace client poll and
// download over loopback HTTPS, pipeline.Run, sealed memfd) and
// curl | openssl enc -d into a memfd on the same job.
func endToEnd(self string, src source, runs int) error {
	job, err := queueJob(src)
	if err != nil {
		return err
	}
	defer job.close()
	var pipe, ref []measurement
	for range runs {
		p, err := runFetch(self, job)
		if err != nil {
			return err
		}
		r, err := runCurlOpenSSL(job)
		if err != nil {
			return err
		}
		pipe, ref = append(pipe, p), append(ref, r)
	}
	label := fmt.Sprintf("%.0f MB %s", float64(job.size)/1e6, src.label)
	p, r := median(pipe), median(ref)
	fmt.Printf("\nend to end: job queued in the simulator → sealed memfd, over loopback HTTPS\n")
	row(label, "lmntd poll+download+pipeline", job.size, p, kib2mib(maxRSS(pipe)), "marketplace client (TLS 1.3), sealed, output verified")
	row(label, "curl | openssl enc -d", job.size, r, 0, "the job's download URL; output verified")
	lo, mid, hi := ratios(pipe, ref)
	fmt.Printf("%-24s %-32s %6.2fx  [%.2f–%.2f]  lmntd takes %.2f× the reference's time (goal ≤ 1.2×)\n",
		label, "ratio pipeline vs curl|openssl", mid, lo, hi, 1/mid)
	return nil
}

func (j *e2eJob) close() {
	j.sim.Close()
	j.ca.Close()
	os.RemoveAll(j.stateDir)
}

// clientOptions are the printer's marketplace settings; the token file is
// in stateDir, the CA certificate on fd 3.
func clientOptions(baseURL, pushURL, stateDir string) marketplace.Options {
	// Development: the simulator's storage host is another loopback port,
	// which downloads may reach only in development mode (as in make demo).
	return marketplace.Options{BaseURL: baseURL, PushBaseURL: pushURL, ExtraCAFile: caPath, StateDir: stateDir, Development: true}
}

func queueJob(src source) (*e2eJob, error) {
	r, err := openFixture(src.path)
	if err != nil {
		return nil, err
	}
	plain, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return nil, err
	}
	sim, err := marketsim.New(marketsim.Options{})
	if err != nil {
		return nil, err
	}
	j := &e2eJob{sim: sim, size: int64(len(plain))}
	j.sha = sha256.Sum256(plain)
	if j.ca, err = memfd.Create("pipebench-ca"); err != nil {
		sim.Close()
		return nil, err
	}
	if _, err := j.ca.Write(sim.CACertPEM()); err != nil {
		j.close()
		return nil, err
	}
	if j.stateDir, err = os.MkdirTemp("", "pipebench-e2e-"); err != nil {
		j.close()
		return nil, err
	}
	if err := j.pairAndQueue(plain); err != nil {
		j.close()
		return nil, err
	}
	return j, nil
}

// pairAndQueue pairs a printer as the daemon does (its token goes to
// stateDir), queues the job and reads it back from the print queue.
func (j *e2eJob) pairAndQueue(plain []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := clientOptions(j.sim.URL(), j.sim.PushURL(), j.stateDir)
	opts.ExtraCAFile = fmt.Sprintf("/proc/self/fd/%d", j.ca.Fd())
	client, err := marketplace.New(opts)
	if err != nil {
		return err
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	j.priv = *priv
	sess, err := client.PairStart(ctx, pub[:], marketplace.PrinterInfo{Name: "pipebench", ExtruderCount: 1})
	if err != nil {
		return err
	}
	if _, err := j.sim.ApprovePairing(sess.Code, ""); err != nil {
		return err
	}
	if err := client.WaitForApproval(ctx, sess.SessionID, 10*time.Millisecond); err != nil {
		return err
	}
	tok, err := client.PairComplete(ctx, sess.SessionID, nil)
	if err != nil {
		return err
	}
	info, err := j.sim.CreateJob(tok.PrinterID, plain, marketsim.JobOptions{Download: marketsim.DownloadStorage})
	if err != nil {
		return err
	}
	j.id = info.ID
	queue, err := client.Poll(ctx)
	if err != nil {
		return err
	}
	for _, q := range queue {
		if q.ID != j.id {
			continue
		}
		dek, err := jobcrypt.OpenDEKPackage(q.DEKPackage, &j.priv)
		if err != nil {
			return err
		}
		defer dek.Zero()
		iv, err := jobcrypt.ParseIVHex(q.IVHex)
		if err != nil {
			return err
		}
		j.key, j.url, j.ivHex = dek.AES256, q.DownloadURL, hex.EncodeToString(iv[:])
		return nil
	}
	return fmt.Errorf("job %s not in the print queue", j.id)
}

func runFetch(self string, j *e2eJob) (measurement, error) {
	ca, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", j.ca.Fd()))
	if err != nil {
		return measurement{}, err
	}
	defer ca.Close()
	start := time.Now()
	c, err := startChild(self, ca, "fetch", j.sim.URL(), j.sim.PushURL(), j.stateDir, j.id)
	if err != nil {
		return measurement{}, err
	}
	_, werr := c.secrets.Write(j.priv[:])
	c.secrets.Close()
	return c.measured(start, werr, j.size, j.sha)
}

// fetchChild is the printer side of a job, as the daemon runs it: poll the
// queue, download the job (storage URL over HTTPS) and stream it through
// the pipeline into a sealed memfd. Args: API URL, push URL, state dir, job
// id; the printer's private key comes on fd 4.
func fetchChild(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("fetch: want API URL, push URL, state dir and job id")
	}
	keys, err := io.ReadAll(os.NewFile(fdSecrets, "secrets"))
	if err != nil {
		return err
	}
	if len(keys) != 32 {
		return fmt.Errorf("secrets pipe: %d bytes", len(keys))
	}
	priv := [32]byte(keys)
	clear(keys)
	defer clear(priv[:])
	ctx := context.Background()
	client, err := marketplace.New(clientOptions(args[0], args[1], args[2]))
	if err != nil {
		return err
	}
	queue, err := client.Poll(ctx)
	if err != nil {
		return err
	}
	for _, job := range queue {
		if job.ID != args[3] {
			continue
		}
		iv, err := jobcrypt.ParseIVHex(job.IVHex)
		if err != nil {
			return err
		}
		body, err := client.Download(ctx, job.ID, job.DownloadURL)
		if err != nil {
			return err
		}
		defer body.Close()
		res, err := pipeline.Run(ctx, pipeline.Input{Body: body, Key: pipeline.DEKPackage(job.DEKPackage, &priv), IV: &iv,
			Name: "pipebench-e2e", Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			return err
		}
		return sendResult(res)
	}
	return fmt.Errorf("job %s not in the print queue", args[3])
}

// runCurlOpenSSL is the reference: curl fetches the job's download URL
// (from a config on fd 4, as it is a secret) and pipes it into openssl enc,
// whose output is a memfd. The throwaway benchmark key is on openssl's argv.
func runCurlOpenSSL(j *e2eJob) (measurement, error) {
	ca, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", j.ca.Fd()))
	if err != nil {
		return measurement{}, err
	}
	defer ca.Close()
	cr, cw, err := os.Pipe()
	if err != nil {
		return measurement{}, err
	}
	defer cr.Close()
	fd, err := unix.MemfdCreate("pipebench-curl-openssl", unix.MFD_CLOEXEC)
	if err != nil {
		cw.Close()
		return measurement{}, err
	}
	out := os.NewFile(uintptr(fd), "curl-openssl-out")
	defer out.Close()
	cmd := timed("/bin/sh", "-c", "curl -sSf --cacert "+caPath+" -K /proc/self/fd/4 | openssl enc -d -aes-256-cbc -K "+
		hex.EncodeToString(j.key[:])+" -iv "+j.ivHex)
	cmd.ExtraFiles = []*os.File{ca, cr}
	cmd.Stdout = out
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cw.Close()
		return measurement{}, err
	}
	_, werr := fmt.Fprintf(cw, "url = %q\n", j.url)
	cw.Close()
	err = cmd.Wait()
	wall := time.Since(start)
	if err != nil || werr != nil {
		return measurement{}, fmt.Errorf("curl | openssl: %v %v: %s", err, werr, errb.String())
	}
	n, sum, err := hashFile(out)
	if err != nil {
		return measurement{}, err
	}
	if n != j.size || sum != j.sha {
		return measurement{}, fmt.Errorf("curl | openssl output differs from the input (%d bytes)", n)
	}
	// GNU time's figures for sh include curl and openssl, which it waited for.
	_, cpu, _, err := gnuTime(errb.String())
	if err != nil {
		return measurement{}, err
	}
	return measurement{wall: wall, cpu: cpu}, nil
}
