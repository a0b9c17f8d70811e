package marketplace_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

var profiles = []marketplace.Profile{marketplace.ProfileCurrent, marketplace.ProfileLegacy}

func fixtureGcode(t *testing.T) []byte {
	t.Helper()
	for _, f := range testutil.Fixtures(t) {
		if f.Name == "prusaslicer_cube20_pla_0.20mm" {
			return f.Bytes(t)
		}
	}
	t.Fatal("fixture prusaslicer_cube20_pla_0.20mm missing")
	return nil
}

func TestPairingByCodePlain(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, &marketsim.Options{TokenLifetime: 30 * 24 * time.Hour}, nil)
	ctx := ctxT(t)
	sess, err := e.client.PairStart(ctx, e.pub[:], benchPrinter)
	if err != nil {
		t.Fatal(err)
	}
	if sess.Code == "" || sess.ExpiresAt.Before(time.Now()) {
		t.Fatalf("session %+v", sess)
	}
	if st, ok, err := e.client.PairStatus(ctx, sess.SessionID); err != nil || ok || st != "pending" {
		t.Fatalf("status before approval: %q %v %v", st, ok, err)
	}
	if _, err := e.client.PairComplete(ctx, sess.SessionID, nil); err == nil {
		t.Fatal("complete before approval succeeded")
	}
	printerID, err := e.sim.ApprovePairing(sess.Code, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.WaitForApproval(ctx, sess.SessionID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tok, err := e.client.PairComplete(ctx, sess.SessionID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok.PrinterID != printerID {
		t.Fatalf("printer id %q, simulator says %q", tok.PrinterID, printerID)
	}
	if d := time.Until(tok.Expiry); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("expiry in %v", d)
	}
	// The token is stored 0600 and survives a restart.
	fi, err := os.Stat(filepath.Join(e.stateDir, marketplace.TokenFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	again := e.newClient()
	if got, ok := again.Token(); !ok || got.Value != tok.Value || got.PrinterID != printerID || !got.Expiry.Equal(tok.Expiry) {
		t.Fatalf("reloaded token %v", got)
	}
	ps := e.sim.Printers()
	if len(ps) != 1 || ps[0].Name != "bench printer" || ps[0].Model != "Ender 3" {
		t.Fatalf("printers %+v", ps)
	}
}

func TestPairingSealedAnswer(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, &marketsim.Options{SealPairing: true, AutoApprove: true}, nil)
	ctx := ctxT(t)
	sess, err := e.client.PairStart(ctx, e.pub[:], benchPrinter)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.client.PairStatus(ctx, sess.SessionID); !ok || err != nil {
		t.Fatalf("auto-approved session not approved: %v", err)
	}
	if _, err := e.client.PairComplete(ctx, sess.SessionID, nil); !errors.Is(err, marketplace.ErrSealedNeedsOpener) {
		t.Fatalf("sealed answer without opener: %v", err)
	}
	tok, err := e.client.PairComplete(ctx, sess.SessionID, keyOpener{e.priv})
	if err != nil {
		t.Fatal(err)
	}
	if ps := e.sim.Printers(); len(ps) != 1 || tok.PrinterID != ps[0].ID {
		t.Fatalf("token for %q, printers %+v", tok.PrinterID, ps)
	}
	// A wrong key cannot open it.
	_, wrong := newKey(t)
	if _, err := e.client.PairComplete(ctx, sess.SessionID, keyOpener{wrong}); err == nil {
		t.Fatal("sealed answer opened with the wrong key")
	}
}

func TestPairStartValidatesKey(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	if _, err := e.client.PairStart(ctxT(t), e.pub[:31], benchPrinter); err == nil {
		t.Fatal("31-byte key accepted")
	}
	if _, err := e.client.PairStart(ctxT(t), e.pub[:], marketplace.PrinterInfo{Name: "x", ExtruderCount: 5}); err == nil {
		t.Fatal("5 extruders accepted")
	}
}

func TestLegacyLoginAndRegistration(t *testing.T) {
	e := newEnv(t, marketplace.ProfileLegacy, nil, nil)
	ctx := ctxT(t)
	if _, err := e.sim.AddUser("owner@example.com", "hunter2"); err != nil {
		t.Fatal(err)
	}
	var he *marketplace.HTTPError
	if _, err := e.client.UserLogin(ctx, "owner@example.com", "wrong"); !errors.As(err, &he) || he.StatusCode != 401 {
		t.Fatalf("bad password: %v", err)
	}
	if _, err := e.client.RegisterPrinter(ctx, "not-a-jwt", e.pub[:], benchPrinter); !errors.As(err, &he) || he.StatusCode != 401 {
		t.Fatalf("register with a bad user token: %v", err)
	}
	userJWT, err := e.client.UserLogin(ctx, "owner@example.com", "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := e.client.RegisterPrinter(ctx, userJWT, e.pub[:], benchPrinter)
	if err != nil {
		t.Fatal(err)
	}
	ps := e.sim.Printers()
	if len(ps) != 1 || reg.Token.PrinterID != ps[0].ID || reg.UserID != ps[0].UserID || reg.KEKID == "" {
		t.Fatalf("registration %+v, printers %+v", reg, ps)
	}
	if tok, ok := e.client.Token(); !ok || tok.Value != reg.Token.Value {
		t.Fatal("registration token not stored")
	}
}

func TestRefreshBothProfiles(t *testing.T) {
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			e := newEnv(t, p, nil, nil)
			old := e.pair()
			tok, err := e.client.Refresh(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if tok.Value == old.Value || tok.PrinterID != old.PrinterID || tok.Expiry.Before(old.Expiry) {
				t.Fatalf("refreshed %v from %v", tok, old)
			}
			if got, _ := e.newClient().Token(); got.Value != tok.Value {
				t.Fatal("refreshed token not persisted")
			}
			if n := e.sim.Calls(marketsim.CallRefresh); n != 1 {
				t.Fatalf("%d refresh calls", n)
			}
		})
	}
}

// Every download route of both profiles delivers the exact ciphertext, which
// opens to the source G-code with the reference libraries; the printer
// token reaches neither the storage host nor the push host.
func TestPollDownloadDecryptStatusBothProfiles(t *testing.T) {
	gcode := fixtureGcode(t)
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			e := newEnv(t, p, nil, nil)
			e.pair()
			ctx := ctxT(t)
			kinds := []marketsim.DownloadKind{marketsim.DownloadGCS, marketsim.DownloadStorage, marketsim.DownloadMarketplace, marketsim.DownloadNone}
			ids := map[string]marketsim.DownloadKind{}
			for _, k := range kinds {
				ids[e.createJob(gcode, k)] = k
			}
			jobs, err := e.client.Poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs) != len(kinds) {
				t.Fatalf("%d jobs polled, want %d", len(jobs), len(kinds))
			}
			for _, j := range jobs {
				kind := ids[j.ID]
				if j.DEKPackage == "" || j.IVHex == "" || j.PurchaseID == "" || j.Status != "ready_to_print" {
					t.Fatalf("%s job lacks fields: %+v", kind, j.LogValue())
				}
				d, err := e.client.Download(ctx, j.ID, j.DownloadURL)
				if err != nil {
					t.Fatalf("%s download: %v", kind, err)
				}
				ct, err := io.ReadAll(d)
				d.Close()
				if err != nil {
					t.Fatalf("%s download body: %v", kind, err)
				}
				if d.ViaProxy != (kind == marketsim.DownloadGCS) {
					t.Fatalf("%s: via proxy = %v", kind, d.ViaProxy)
				}
				if d.Size != int64(len(ct)) {
					t.Fatalf("%s: size %d, read %d", kind, d.Size, len(ct))
				}
				if plain := decryptJob(t, e.priv, j, ct); !bytes.Equal(plain, gcode) {
					t.Fatalf("%s: decrypted G-code differs from the source", kind)
				}
			}
			if n := e.sim.Calls(marketsim.CallStorage); n != 1 {
				t.Fatalf("storage host got %d requests, want 1 (the storage-kind job)", n)
			}
			if n := e.sim.Calls(marketsim.CallJobDetails); n != 1 {
				t.Fatalf("get-print-job called %d times, want 1 (the job without URL)", n)
			}
			if auth := e.sim.StorageAuthorizations(); len(auth) != 0 {
				t.Fatalf("foreign hosts received Authorization headers: %d", len(auth))
			}

			// Job status: processing, then success with stats (current only).
			id := jobs[0].ID
			filament, printDur, total := 1234.5, 3600.0, 3700.0
			for _, r := range []marketplace.StatusReport{
				{Status: jobstatus.Processing},
				{Status: jobstatus.Printing, Message: "Printing: 42.0%"},
				{Status: jobstatus.Success, FilamentUsed: &filament, PrintDuration: &printDur, TotalDuration: &total},
			} {
				if res := e.client.PostJobStatus(ctx, id, r); res.Outcome != marketplace.Accepted {
					t.Fatalf("%s: %v %v", r.Status, res.Outcome, res.Err)
				}
			}
			h := e.sim.StatusHistory(id)
			if len(h) != 3 || h[0].Status != "processing" || h[1].Message != "Printing: 42.0%" || h[2].Status != "success" || h[2].Profile != string(p) {
				t.Fatalf("history %+v", h)
			}
			withStats := h[2].FilamentUsed != nil && *h[2].FilamentUsed == filament && *h[2].PrintDuration == printDur && *h[2].TotalDuration == total
			if withStats != (p == marketplace.ProfileCurrent) {
				t.Fatalf("stats sent = %v for profile %s", withStats, p)
			}
			// A finished job leaves the queue.
			jobs, err = e.client.Poll(ctx)
			if err != nil || len(jobs) != len(kinds)-1 {
				t.Fatalf("after success: %d jobs, %v", len(jobs), err)
			}
		})
	}
}

func TestJobFileURLFallback(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	id := e.createJob([]byte("G28\n"), marketsim.DownloadNone)
	u, err := e.client.JobFileURL(ctxT(t), id)
	if err != nil || u == "" {
		t.Fatalf("gcode_file_url %q: %v", u, err)
	}
	var he *marketplace.HTTPError
	if _, err := e.client.JobFileURL(ctxT(t), "job-nope"); !errors.As(err, &he) || he.StatusCode != 404 {
		t.Fatalf("unknown job: %v", err)
	}
}

// The storage-proxy rule applies to any configured host: with the fake
// storage host listed, its URLs go through the marketplace proxy instead.
func TestStorageProxyHostsConfigurable(t *testing.T) {
	var storageHost string
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	storageHost = e.sim.StorageURL()[len("https://"):]
	e.opts.StorageProxyHosts = []string{storageHost}
	e.client = e.newClient()
	e.pair()
	e.createJob([]byte("G28\n"), marketsim.DownloadStorage)
	jobs, err := e.client.Poll(ctxT(t))
	if err != nil || len(jobs) != 1 {
		t.Fatal(err)
	}
	d, err := e.client.Download(ctxT(t), jobs[0].ID, jobs[0].DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := io.ReadAll(d); err != nil || !d.ViaProxy {
		t.Fatalf("via proxy %v: %v", d.ViaProxy, err)
	}
	if n := e.sim.Calls(marketsim.CallStorage); n != 0 {
		t.Fatalf("storage host contacted %d times", n)
	}
}

// Polled jobs never show their secrets in logs or %v.
func TestJobAndTokenRedactedInLogs(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	var logs bytes.Buffer
	e.opts.Logger = newJSONLogger(&logs)
	e.client = e.newClient()
	tok := e.pair()
	e.createJob([]byte("G28\n"), marketsim.DownloadStorage)
	jobs, err := e.client.Poll(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.client.Download(ctxT(t), jobs[0].ID, jobs[0].DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, d)
	d.Close()
	// What callers will do with these values: log them, print them.
	e.opts.Logger.Info("job", "job", jobs[0], "token", tok)
	fmt.Fprintf(&logs, "%v %v %s %s", jobs[0], tok, jobs[0], tok)
	for _, secret := range []string{tok.Value, jobs[0].DEKPackage, jobs[0].IVHex, "sig="} {
		if bytes.Contains(logs.Bytes(), []byte(secret)) {
			t.Fatalf("log output contains a secret (%.12s…):\n%s", secret, logs.String())
		}
	}
	if !bytes.Contains(logs.Bytes(), []byte("?REDACTED")) {
		t.Fatalf("download URL not logged redacted:\n%s", logs.String())
	}
}
