package marketplace_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// hostsWithToken lists the simulator hosts that received a printer token.
func hostsWithToken(sim *marketsim.Server) []string {
	var out []string
	for _, p := range sim.TokenPresentations() {
		if p.Kind == "printer" && !slices.Contains(out, p.Host) {
			out = append(out, p.Host)
		}
	}
	return out
}

// fetchJob polls the one queued job and downloads it.
func fetchJob(t *testing.T, e *env) (marketplace.Job, *marketplace.Download, []byte) {
	t.Helper()
	jobs, err := e.client.Poll(ctxT(t))
	if err != nil || len(jobs) != 1 {
		t.Fatalf("poll: %v %v", jobs, err)
	}
	d, err := e.client.Download(ctxT(t), jobs[0].ID, jobs[0].DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	body, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return jobs[0], d, body
}

// Download routing in both profiles: storage hosts are fetched directly
// without the token; Google and Firebase storage URLs go through the
// proxy; a second LMNT host that wants the token is reached through the
// proxy fallback, or directly when it is in token_hosts.
func TestDownloadRouting(t *testing.T) {
	gcode := []byte("G28\nG1 X10 Y10 F3000\n")
	for _, profile := range profiles {
		for _, tc := range []struct {
			kind       marketsim.DownloadKind
			tokenHosts func(sim *marketsim.Server) []string
			viaProxy   bool
			tokenAt    []string // hosts that saw the printer token
		}{
			{kind: marketsim.DownloadStorage, viaProxy: false, tokenAt: []string{"api"}},
			{kind: marketsim.DownloadGCS, viaProxy: true, tokenAt: []string{"api"}},
			{kind: marketsim.DownloadFirebase, viaProxy: true, tokenAt: []string{"api"}},
			{kind: marketsim.DownloadMarketplace, viaProxy: false, tokenAt: []string{"api"}},
			// Not a token host: no token, 401, the proxy fallback.
			{kind: marketsim.DownloadLMNTHost, viaProxy: true, tokenAt: []string{"api"}},
			// Listed in marketplace.token_hosts: the token goes there.
			{kind: marketsim.DownloadLMNTHost, viaProxy: false, tokenAt: []string{"api", "lmnt-host"},
				tokenHosts: func(sim *marketsim.Server) []string {
					return []string{strings.TrimPrefix(sim.URL(), "https://"), strings.TrimPrefix(sim.LMNTHostURL(), "https://")}
				}},
		} {
			name := fmt.Sprintf("%s/%s", profile, tc.kind)
			if tc.tokenHosts != nil {
				name += "/listed"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, profile, nil, nil)
				if tc.tokenHosts != nil {
					e.opts.TokenHosts = tc.tokenHosts(e.sim)
					e.client = e.newClient()
				}
				e.pair()
				e.createJob(gcode, tc.kind)
				job, d, body := fetchJob(t, e)
				if got := decryptJob(t, e.priv, job, body); !bytes.Equal(got, gcode) {
					t.Fatal("decrypted body differs")
				}
				if d.ViaProxy != tc.viaProxy {
					t.Errorf("via proxy %v, want %v", d.ViaProxy, tc.viaProxy)
				}
				if got := hostsWithToken(e.sim); !slices.Equal(got, tc.tokenAt) {
					t.Errorf("printer token presented to %v, want %v (%+v)", got, tc.tokenAt, e.sim.TokenPresentations())
				}
				if auth := e.sim.StorageAuthorizations(); len(auth) != 0 {
					t.Errorf("storage or push host got Authorization %q", auth)
				}
			})
		}
	}
}

// A hostile marketplace (or a hijacked job URL) aims downloads into the
// printer's own network: loopback ports, plain http, https→http redirects,
// a name that resolves to loopback. Outside development mode each is
// refused; and a failure never carries the answer's body.
func TestDownloadSSRF(t *testing.T) {
	// An internal service on loopback that must stay unreachable.
	internalHits := 0
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits++
		fmt.Fprint(w, "INTERNAL-SECRET")
	}))
	defer internal.Close()
	internalTLS := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits++
		fmt.Fprint(w, "INTERNAL-SECRET")
	}))
	defer internalTLS.Close()

	// The hostile marketplace is the configured host (on loopback, which is
	// allowed for it): it hands out URLs and redirects.
	var mkt *httptest.Server
	mkt = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/printer-agent/poll-print-queue":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"jobs":[`+strings.Join([]string{
				`{"print_job_id":"direct-loopback","encrypted_gcode_download_url":"` + internalTLS.URL + `/x","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"plain-http","encrypted_gcode_download_url":"http://203.0.113.9/x","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"localhost-name","encrypted_gcode_download_url":"https://localhost:1/x","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"link-local","encrypted_gcode_download_url":"https://169.254.169.254/latest/meta-data","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"redirect-to-http","encrypted_gcode_download_url":"` + mkt.URL + `/redir-http","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"redirect-to-loopback","encrypted_gcode_download_url":"` + mkt.URL + `/redir-https","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
				`{"print_job_id":"reflected-body","encrypted_gcode_download_url":"` + mkt.URL + `/error","gcode_dek_encrypted_hex":"a:b:c","gcode_iv_hex":"00"}`,
			}, ",")+`]}`)
		case "/redir-http":
			http.Redirect(w, r, internal.URL+"/x", http.StatusFound)
		case "/redir-https":
			http.Redirect(w, r, internalTLS.URL+"/x", http.StatusFound)
		case "/error":
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "REFLECTED-BODY of an internal service")
		default:
			http.NotFound(w, r)
		}
	}))
	defer mkt.Close()
	transport := mkt.Client().Transport.(*http.Transport).Clone()
	transport.TLSClientConfig.RootCAs.AddCert(internalTLS.Certificate())
	c, err := marketplace.New(marketplace.Options{BaseURL: mkt.URL, StateDir: t.TempDir(), Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportToken(jwtWith(t, map[string]any{"printer_id": "prn-ssrf", "exp": time.Now().Add(time.Hour).Unix()}), "prn-ssrf", time.Time{}); err != nil {
		t.Fatal(err)
	}
	jobs, err := c.Poll(ctxT(t))
	if err != nil || len(jobs) != 7 {
		t.Fatalf("poll: %d jobs, %v", len(jobs), err)
	}
	want := map[string]error{
		"direct-loopback":      marketplace.ErrForbiddenTarget,
		"plain-http":           marketplace.ErrInsecureURL,
		"localhost-name":       marketplace.ErrForbiddenTarget,
		"link-local":           marketplace.ErrForbiddenTarget,
		"redirect-to-http":     marketplace.ErrInsecureURL,
		"redirect-to-loopback": marketplace.ErrForbiddenTarget,
	}
	for _, j := range jobs {
		d, err := c.Download(ctxT(t), j.ID, j.DownloadURL)
		if err == nil {
			d.Close()
			t.Errorf("%s: download allowed", j.ID)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "REFLECTED") {
			t.Errorf("%s: the error carries the answer's body: %v", j.ID, err)
		}
		if j.ID == "reflected-body" {
			var he *marketplace.HTTPError
			if !errors.As(err, &he) || he.StatusCode != 500 || !strings.Contains(err.Error(), "HTTP 500") {
				t.Errorf("reflected-body: %v (want the status code only)", err)
			}
			continue
		}
		if !errors.Is(err, want[j.ID]) {
			t.Errorf("%s: %v, want %v", j.ID, err, want[j.ID])
		}
	}
	if internalHits != 0 {
		t.Errorf("the internal service was reached %d times", internalHits)
	}
}
