package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/democube"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// browser is Debian's headless Chromium driven over CDP, recording what
// its console says.
type browser struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errors []string
	shots  string
}

func newBrowser(t *testing.T) *browser {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: scripts/install-deps.sh installs it")
	}
	profile, err := os.MkdirTemp("", "lmntd-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(profile), chromedp.WindowSize(390, 844),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	// Chromium's helper processes may still write to the profile for a
	// moment after the browser is gone: remove it best effort, not with
	// t.TempDir's strict cleanup.
	t.Cleanup(func() { cancelB(); cancelA(); _ = os.RemoveAll(profile) })
	b := &browser{t: t, ctx: ctx}
	b.shots = os.Getenv("LMNTD_TEST_ARTIFACTS")
	if b.shots == "" {
		b.shots = filepath.Join(os.TempDir(), "lmntd-test-artifacts")
	}
	b.shots = filepath.Join(b.shots, "status-page")
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	chromedp.ListenTarget(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value))
				}
				b.errors = append(b.errors, "console: "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, "exception: "+ev.ExceptionDetails.Error())
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.LevelError || ev.Entry.Level == cdplog.LevelWarning {
				b.errors = append(b.errors, fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text))
			}
		}
	})
	// chromedp starts Chromium with Pdeathsig=SIGKILL, which the kernel
	// sends when the thread that forked it ends. The job engine running in
	// this process lowers a thread's priority for each job and lets the Go
	// runtime end that thread afterwards (internal/jobs/priority.go): when
	// it was the thread that had forked Chromium, Chromium died mid-test
	// and every call failed with "context canceled" (6 of 12 runs beside
	// other tests; 0 of 10 since). So Chromium is forked from a thread that stays
	// locked to a goroutine for as long as the browser lives.
	started, release := make(chan error), make(chan struct{})
	go func() {
		goruntime.LockOSThread()
		started <- chromedp.Run(ctx, cdplog.Enable(), runtime.Enable())
		<-release
		goruntime.UnlockOSThread()
	}()
	t.Cleanup(func() { close(release) })
	if err := <-started; err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

func (b *browser) run(actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// text is what the page shows (innerText: only visible text).
func (b *browser) text() string {
	var s string
	b.run(chromedp.Evaluate(`document.body.innerText`, &s))
	return s
}

// waitText waits until the page shows every one of want. The browser
// itself polls (chromedp.Poll): evaluating the page from here every 5 ms,
// testutil.Eventually's pace, made chromedp's calls fail with "context
// canceled" in TestStatusPage (between the preparing and printing cards).
func (b *browser) waitText(want ...string) string {
	b.t.Helper()
	words, err := json.Marshal(want)
	if err != nil {
		b.t.Fatal(err)
	}
	var shown bool
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	err = chromedp.Run(ctx, chromedp.Poll(`(function(){ var s = document.body.innerText; return `+string(words)+`.every(function(w){ return s.indexOf(w) >= 0; }); })()`,
		&shown, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	s := b.text()
	if err != nil {
		for _, w := range want {
			if !strings.Contains(s, w) {
				b.t.Fatalf("the page does not show %q (%v); it shows:\n%s", w, err, s)
			}
		}
	}
	return s
}

// consoleErrors returns and clears the console's errors so far; allowed
// drops the ones a step provokes on purpose.
func (b *browser) consoleErrors(allowed ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, e := range b.errors {
		for _, a := range allowed {
			if strings.Contains(e, a) {
				continue next
			}
		}
		out = append(out, e)
	}
	b.errors = nil
	return out
}

// state checks a state's screen: the texts it must show, the ones it must
// not (actions that make no sense there), no console errors, the layout at
// 390 px (no sideways scrolling, 44 px targets); then keeps a screenshot.
func (b *browser) state(name string, show, hide []string, allowedErrors ...string) string {
	b.t.Helper()
	s := b.waitText(show...)
	for _, h := range hide {
		if strings.Contains(s, h) {
			b.t.Errorf("%s: the page shows %q:\n%s", name, h, s)
		}
	}
	var layout struct {
		Overflow bool     `json:"overflow"`
		Small    []string `json:"small"`
	}
	b.run(chromedp.Evaluate(`(function(){
		var small = [];
		document.querySelectorAll("button, input, a").forEach(function (e) {
			var r = e.getBoundingClientRect();
			if (r.width > 0 && e.tagName !== "A" && (r.height < 44 || r.width < 44)) { small.push(e.outerHTML.slice(0, 60)); }
		});
		return { overflow: document.documentElement.scrollWidth > window.innerWidth, small: small };
	})()`, &layout))
	if layout.Overflow {
		b.t.Errorf("%s: the page is wider than the 390 px screen", name)
	}
	if len(layout.Small) > 0 {
		b.t.Errorf("%s: touch targets under 44 px: %v", name, layout.Small)
	}
	if errs := b.consoleErrors(allowedErrors...); len(errs) > 0 {
		b.t.Errorf("%s: console errors: %v", name, errs)
	}
	var png []byte
	b.run(chromedp.FullScreenshot(&png, 100))
	file := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return s
}

// lanFront stands in for the shipped nginx site on the printer: it serves
// browsers on loopback TCP and forwards to lmntd's proxy socket, telling
// lmntd (X-Forwarded-For) that the browser is at lanAddr on the LAN. It
// returns the URL browsers use.
func lanFront(t *testing.T, d *daemontest.Daemon, lanAddr string) string {
	t.Helper()
	upstream := &url.URL{Scheme: "http", Host: "lmntd"}
	front := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Forwarded-For", lanAddr)
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.ProxySocket)
		}},
	})
	t.Cleanup(front.Close)
	return front.URL
}

// TestStatusPage drives the real page in headless Chromium through every
// state an owner meets: not paired, an error from the marketplace, the
// code, waiting for the bed, preparing, printing (with the job's thumbnail
// from memory), a failed job, Klipper shut down and lmntd gone.
func TestStatusPage(t *testing.T) {
	cube := democube.Generate()
	// The way a LAN browser reaches the page: through the web server's
	// proxy socket, from a network in trusted_clients.
	d := daemontest.Start(t, daemontest.Options{ProxyGroup: "root", TrustedClients: []string{"192.168.77.0/24"},
		StandinSpeed: int64(len(cube) / 4)})
	front := lanFront(t, d, "192.168.77.7")
	b := newBrowser(t)
	b.run(chromedp.Navigate(front + "/machine/lmnt_marketplace/ui"))
	noBed := []string{"The bed is clear"}

	b.state("1-not-paired", []string{"Not paired yet", "Start pairing", "Printer name in the marketplace"}, noBed)

	// The marketplace fails once: the error is in words, and stays.
	d.Sim.SetFault(marketsim.CallPairStart, marketsim.Fault{Status: http.StatusServiceUnavailable, Count: 1})
	b.run(chromedp.SendKeys("#name", "Page printer", chromedp.ByID), chromedp.Click("#pair", chromedp.ByID))
	b.waitText("Pairing could not start. The LMNT Marketplace could not be reached")
	time.Sleep(2500 * time.Millisecond) // a refresh or more
	s := b.state("2-error", []string{"Pairing could not start. The LMNT Marketplace could not be reached", "Not paired yet"}, append(noBed, "HTTP 50", `{"error"`),
		"status of 502")
	var cls string
	b.run(chromedp.AttributeValue("#notice .notice", "class", &cls, nil, chromedp.ByQuery))
	if !strings.Contains(cls, "error") {
		t.Errorf("the error is not styled as one (class %q):\n%s", cls, s)
	}

	b.run(chromedp.Click("#pair", chromedp.ByID))
	b.state("3-code", []string{"Enter this code in the LMNT Marketplace", "My printers → Add printer", "The code expires in"},
		append(noBed, "Start pairing"))
	var code string
	b.run(chromedp.Text("#code", &code, chromedp.ByID))
	printerID, err := d.Sim.ApprovePairing(strings.TrimSpace(code), "")
	if err != nil {
		t.Fatal(err)
	}
	b.waitText("Page printer")
	if strings.Contains(b.text(), "Is the bed clear?") {
		b.state("4-bed-first", []string{"Is the bed clear?", "The bed is clear"}, []string{"Start pairing"})
		b.run(chromedp.Click("#ready", chromedp.ByID))
	}
	b.state("4-idle", []string{"Ready for the next print"}, append(noBed, "Start pairing"))

	// A purchase: the download is held for 2 s so that the preparing card shows.
	d.Sim.SetFault(marketsim.CallStorage, marketsim.Fault{Latency: 2 * time.Second, Count: 1})
	d.Sim.SetFault(marketsim.CallDownload, marketsim.Fault{Latency: 2 * time.Second, Count: 1})
	if _, err := d.Sim.CreateJob(printerID, cube, marketsim.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	b.state("5-preparing", []string{"Getting the print ready", "only in memory"}, append(noBed, "Start pairing"))
	b.state("6-printing", []string{"Printing", "%"}, append(noBed, "Start pairing"))
	var thumbWidth int
	b.run(chromedp.Poll(`(function(){ var i = document.querySelector(".job img"); return i && i.complete && i.naturalWidth; })()`, &thumbWidth,
		chromedp.WithPollingTimeout(10*time.Second)))
	if thumbWidth != 300 {
		t.Errorf("the job's thumbnail shows %d px wide, want the cube's 300 px thumbnail", thumbWidth)
	}
	b.run(chromedp.EmulateViewport(1280, 800))
	var png []byte
	b.run(chromedp.FullScreenshot(&png, 100))
	_ = os.WriteFile(filepath.Join(b.shots, "6-printing-desktop.png"), png, 0o644)
	b.run(chromedp.EmulateViewport(390, 844))

	// The print ended: the bed card is the one place the button appears,
	// and the confirmation stays on screen across refreshes.
	b.state("7-bed", []string{"Is the bed clear?", "The bed is clear"}, []string{"Start pairing"})
	b.run(chromedp.Click("#ready", chromedp.ByID))
	b.waitText("Thank you: the next job may start.", "Ready for the next print")
	time.Sleep(2500 * time.Millisecond)
	b.state("8-confirmed", []string{"Thank you: the next job may start.", "Ready for the next print"}, noBed)

	// A job that is not G-code fails at the gate, in plain words that say
	// nothing about where it failed.
	if _, err := d.Sim.CreateJob(printerID, []byte("\x89PNG\r\n\x1a\nnot a print at all"), marketsim.JobOptions{}); err != nil {
		t.Fatal(err)
	}
	b.state("9-failed", []string{"The last print did not complete", "The file failed verification", "never reached Klipper"}, append(noBed, "offset", "gcode"))

	// Klipper shut down: what happened and what to do.
	d.Standin.Shutdown("MCU 'mcu' shutdown: Timer too close\nThis often indicates the host computer is overloaded.")
	b.state("10-klipper-shutdown", []string{"Klipper is shut down: MCU 'mcu' shutdown: Timer too close", "FIRMWARE_RESTART"}, noBed)
	d.Standin.FirmwareRestart()

	// Nothing on disk carries the thumbnail (it came from the G-code).
	filepath.Walk(d.StateDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte("\x89PNG")) {
				t.Errorf("%s holds a PNG image", p)
			}
		}
		return nil
	})

	// lmntd gone: the page says so instead of showing stale data.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	b.state("11-unreachable", []string{"lmntd cannot be reached", "lmnt doctor"}, []string{"Ready for the next print"},
		"status of 502", "ERR_CONNECTION_REFUSED", "Failed to fetch")
	t.Logf("screenshots in %s", b.shots)
}

// TestRefusedBrowserGetsAPage: a browser on a network not in
// api.trusted_clients is told what to add, with its own network; API
// clients keep the JSON error, and a loopback caller is never told to
// allow loopback.
func TestRefusedBrowserGetsAPage(t *testing.T) {
	addr := testutil.FreePort(t)
	d := daemontest.Start(t, daemontest.Options{HTTPListen: addr, ProxyGroup: "root", TrustedClients: []string{"10.99.0.0/16"}, NoStandin: true})
	front := lanFront(t, d, "192.168.5.9")
	get := func(base, accept string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, base+"/machine/lmnt_marketplace/ui", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	const browser = "text/html,application/xhtml+xml,*/*;q=0.8"
	resp, body := get(front, browser)
	if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `trusted_clients = ["192.168.5.0/24"]`) || !strings.Contains(body, "192.168.5.9") ||
		!strings.Contains(body, "systemctl reload lmntd") {
		t.Errorf("browser refused: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = get(front, "application/json")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
		t.Errorf("API client refused: %d %s", resp.StatusCode, body)
	}
	resp, body = get("http://"+addr, browser)
	if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "trusted_clients = [") {
		t.Errorf("a loopback browser was offered a loopback allowance: %d\n%s", resp.StatusCode, body)
	}
}
