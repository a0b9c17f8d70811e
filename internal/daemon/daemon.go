// Package daemon wires lmntd together: configuration, the sealed printer
// key, the marketplace client with its poller, push stream and token
// refresher, the Klipper bridge, the printer.cfg watcher, the job engine and
// the local API; systemd socket activation (by fd name: api, klipper, http)
// or sockets of its own; sd_notify READY/STATUS/WATCHDOG/STOPPING; SIGHUP
// reload; and a shutdown order that never abandons a print (a print already
// handed to Klipper keeps going on Klipper's own descriptor; a job being
// downloaded is journaled and resumes on the next start).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/logging"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/metrics"
	"github.com/lmnt-marketplace/lmntd/internal/seal"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

// ExitRestart is the exit status of a "restart when idle" request; the unit
// restarts on it (RestartForceExitStatus=75, EX_TEMPFAIL).
const ExitRestart = 75

// ErrRestartRequested is returned by Run after a restart-when-idle request
// was carried out; the caller exits with ExitRestart.
var ErrRestartRequested = errors.New("daemon: restart requested, exiting while idle")

// Options configure Run.
type Options struct {
	// Config says where the configuration is read from (flags included).
	Config config.Options
	// LogOutput receives the log (text, one line per record); nil ⇒ stderr.
	LogOutput io.Writer
	// HostRoot is where /proc, /sys and /etc are read for the board identity
	// and the old plugin's fingerprint ("" ⇒ "/").
	HostRoot string
	// APIGroup may use the API socket besides root and the daemon's user
	// ("" ⇒ "lmnt").
	APIGroup string
	// HandleSignals makes Run handle SIGTERM/SIGINT (stop) and SIGHUP
	// (reload) itself; in-process users cancel ctx instead.
	HandleSignals bool
	// PollMinInterval is the floor between two marketplace polls; 0 ⇒ 1 s.
	PollMinInterval time.Duration
	// TimeScale runs every wait of the marketplace loops and the status
	// outbox this many times faster (check_interval included): a fleet
	// test lives through simulated minutes in seconds. 0 ⇒ 1 (real time).
	TimeScale float64
	// Jitter draws the poll jitter, uniform in [0,1); nil ⇒ random.
	Jitter func() float64
	// PairingBurst and PairingEvery rate-limit pairing, login and
	// registration calls on the API (defaults: 10, one per 6 s).
	PairingBurst int
	PairingEvery time.Duration
	// PairingPollInterval is how often an open pairing session is checked
	// for approval; 0 ⇒ the spec's 2 s.
	PairingPollInterval time.Duration
	// ProfileProbeRetry is the first wait before api_profile "auto" probes
	// the marketplace again after a failed probe (doubling to 5 min);
	// 0 ⇒ 5 s.
	ProfileProbeRetry time.Duration
}

// daemon is one run of lmntd.
type daemon struct {
	o        Options
	log      *slog.Logger
	previews previewStore
	level    *slog.LevelVar
	watcher  *config.Watcher
	cfg      atomic.Pointer[config.Config]
	keys     *keyring
	mkt      atomic.Pointer[marketplace.Client]
	bridge   *klipper.Server
	engine   *jobs.Engine
	kcfg     *klippercfg.Watcher
	api      *api.Server
	pair     *pairing
	started  time.Time
	poller   atomic.Pointer[marketplace.Poller]
	progress transfers
	metrics  *metrics.Metrics
	jobTimes jobTimes
	pushUp   atomic.Bool // the push stream is connected
	textfile textfileState
	// profile is the API profile in effect and why (api_profile "auto" is
	// resolved at start, by a probe in the background when the settings
	// cannot tell; the profile and URL need a restart to change).
	profile      atomic.Pointer[profileState]
	profileReady chan struct{} // closed once the profile is settled

	loopsRestart chan struct{} // marketplace loops: pairing changed or settings reloaded
	restartIdle  atomic.Bool
	statusWake   chan struct{} // superviseStatus: look again now
	stop         context.CancelCauseFunc

	mu          sync.Mutex
	lastPoll    time.Time
	lastPollErr string
	lastPollOK  time.Time // the last poll the marketplace answered
	printer     printerInfo

	health health
}

// Run runs lmntd until ctx ends (or, with HandleSignals, SIGTERM). It
// returns an error naming the file and key for a bad configuration, and
// ErrRestartRequested after a restart-when-idle request.
func Run(ctx context.Context, o Options) error {
	cfg, err := config.Load(o.Config)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	d := &daemon{o: o, level: new(slog.LevelVar), started: time.Now(), loopsRestart: make(chan struct{}, 1), statusWake: make(chan struct{}, 1)}
	d.cfg.Store(cfg)
	out := o.LogOutput
	if out == nil {
		out = os.Stderr
	}
	_ = d.level.UnmarshalText([]byte(cfg.Log.Level))
	journal := false
	if f, ok := out.(*os.File); ok {
		journal = logging.JournalStream(f, os.Getenv)
	}
	d.log = logging.New(out, d.level, journal)
	for _, n := range cfg.Notes() {
		d.log.Info("config: " + n)
	}
	for _, im := range cfg.Imports() {
		d.log.Info("config: imported from moonraker.conf", "key", im.Key, "value", im.Value, "source", im.Source.String())
	}
	for _, fe := range cfg.Degraded() {
		d.log.Warn("config: value not usable and ignored (lmnt doctor)", "problem", fe.Error())
	}
	return d.run(ctx)
}

func (d *daemon) run(parent context.Context) (err error) {
	cfg := d.cfg.Load()
	ctx, stop := context.WithCancelCause(parent)
	defer stop(nil)
	d.stop = stop
	// Signals are caught from the start (a SIGHUP must not kill a starting
	// daemon) and handled once the config watcher exists.
	var startSignals func()
	if d.o.HandleSignals {
		var stopSignals func()
		startSignals, stopSignals = d.catchSignals(ctx)
		defer stopSignals()
	}

	if err := os.MkdirAll(cfg.Paths.StateDirectory, 0o700); err != nil {
		return fmt.Errorf("paths.state_directory %s: %w", cfg.Paths.StateDirectory, err)
	}
	d.printer = loadPrinterInfo(cfg.Paths.StateDirectory)

	mode, err := seal.ParseMode(cfg.Seal.Backend)
	if err != nil {
		return fmt.Errorf("seal.backend: %w", err)
	}
	if d.keys, err = openKeyring(sealOptions(cfg, d.o.HostRoot, d.log, mode), d.log); err != nil {
		return err
	}
	defer d.keys.zero()
	defer func() {
		if d.pair != nil {
			d.pair.stop()
		}
	}()

	d.metrics = d.newMetrics()
	d.settleProfile(cfg)
	client, err := d.newClient(cfg)
	if err != nil {
		return err
	}
	d.mkt.Store(client)

	d.bridge = klipper.NewServer(klipper.Options{
		AllowedUIDs:    d.klipperUIDs(cfg),
		StatusInterval: cfg.Klipper.StatusInterval,
		Logger:         d.log.With(logging.ComponentKey, "bridge"),
		DaemonVersion:  version.Version,
	})
	d.engine, err = jobs.New(jobs.Options{
		StateDir: cfg.Paths.StateDirectory,
		Marketplace: adapters.Marketplace{
			Client: d.mkt.Load,
			Track:  d.progress.track,
		},
		Decryptor: adapters.Decryptor{
			WithKey: func(use func(priv *[32]byte) error) error {
				return d.keys.with(func(k *identity.Key) error { return use(k.Private()) })
			},
			Logger: d.log,
			Decrypted: func(jobID string, m *gcode.Metadata, size int64, took time.Duration) {
				d.previews.put(jobID, m)
				d.metrics.Decrypted(size, took)
			},
		},
		Printer:      adapters.Klipper{Server: d.bridge},
		Logger:       d.log.With(logging.ComponentKey, "jobs"),
		AutoStart:    cfg.Jobs.AutoStart,
		RequestPoll:  d.triggerPoll,
		OnTransition: d.onJobTransition,
		Stubs:        d.stubStore(cfg),
		KeepStubs:    cfg.Klipper.KeepStub,
		LocalLimits: func() (int, int64) {
			l := d.cfg.Load().Limits
			return l.MaxLocalJobs, int64(l.MaxLocalQueueSize)
		},
		// The engine's defaults (5 s, 5 min, 30 s) under TimeScale.
		RetryMin:          d.scaled(5 * time.Second),
		RetryMax:          d.scaled(5 * time.Minute),
		HeartbeatInterval: d.scaled(30 * time.Second),
		// Each decrypted job is compared with printer.cfg as last read
		// and the filament the owner configured, before it reaches Klipper.
		Check: adapters.PrinterFit{
			Printer:      func() klippercfg.Printer { return d.configReport().Printer },
			FilamentType: func() string { return d.cfg.Load().Jobs.FilamentType },
			Logger:       d.log.With(logging.ComponentKey, "compat"),
		}.Check,
	})
	if err != nil {
		return fmt.Errorf("job journal in %s: %w", cfg.Paths.StateDirectory, err)
	}
	d.pair = newPairing(d)
	d.pair.resume()
	d.api = api.New(api.Options{
		Backend: backend{d},
		Access: api.Access{
			Group:          d.o.APIGroup,
			ProxyGroup:     cfg.API.ProxyGroup,
			TrustedClients: func() []netip.Prefix { return d.cfg.Load().API.TrustedClients },
			APIKey:         d.apiKey(cfg),
			AllowedHosts:   func() []string { return d.cfg.Load().API.AllowedHosts },
		},
		// An upload that cannot fit in the local queue is refused while
		// it arrives, not after it has been stored in memory.
		MaxUpload: func() int64 {
			return min(int64(d.cfg.Load().Limits.MaxDownloadSize), d.engine.LocalRoom())
		},
		PairingBurst: d.o.PairingBurst,
		PairingEvery: d.o.PairingEvery,
		Metrics:      d.metrics.WritePrometheus,
		Logger:       d.log.With(logging.ComponentKey, "api"),
	})

	group := d.o.APIGroup
	if group == "" {
		group = "lmnt"
	}
	ls, err := openListeners(listenConfig{apiSocket: cfg.API.Socket, bridgeSocket: cfg.Klipper.BridgeSocket, httpAddr: cfg.API.Listen,
		group: group, proxySocket: cfg.API.ProxySocket, proxyGroup: cfg.API.ProxyGroup}, d.log)
	if err != nil {
		return err
	}
	defer ls.close()

	// Each part runs under its own context so that shutdown can stop them
	// in order: API first (no new work), then the marketplace, then the
	// engine (which leaves a running print to Klipper), the bridge last.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	mktCtx, stopMkt := context.WithCancel(context.Background())
	engCtx, stopEng := context.WithCancel(context.Background())
	brCtx, stopBridge := context.WithCancel(context.Background())
	defer func() { stopAPI(); stopMkt(); stopEng(); stopBridge() }()

	var apiWG, mktWG, engWG, brWG, auxWG sync.WaitGroup
	goRun := func(wg *sync.WaitGroup, name string, f func() error) {
		wg.Add(1)
		d.health.start(name)
		go func() {
			defer wg.Done()
			err := f()
			d.health.end(name, err)
			if err != nil && !errors.Is(err, context.Canceled) {
				d.log.Error(name+" stopped", "err", err)
			}
		}()
	}

	// printer.cfg is watched before anything can ask about it.
	if d.kcfg, err = klippercfg.Watch(ctx, cfg.Klipper.ConfigFile, klippercfg.WatchOptions{
		Check: klippercfg.CheckOptions{BridgeSocket: cfg.Klipper.BridgeSocket}, Logger: d.log.With(logging.ComponentKey, "klippercfg"),
	}); err != nil {
		d.log.Warn("cannot watch Klipper's config; doctor checks it on demand", "file", cfg.Klipper.ConfigFile, "err", err)
	} else {
		auxWG.Add(1)
		go func() { defer auxWG.Done(); d.logConfigReports(ctx) }()
	}

	goRun(&brWG, "bridge", func() error { return d.bridge.Serve(brCtx, ls.klipper) })
	goRun(&engWG, "engine", func() error { return d.engine.Run(engCtx) })
	goRun(&apiWG, "api", func() error { return d.api.Serve(apiCtx, ls.api) })
	if ls.http != nil {
		goRun(&apiWG, "api-tcp", func() error { return d.api.Serve(apiCtx, ls.http) })
	}
	if ls.proxy != nil {
		goRun(&apiWG, "api-proxy", func() error { return d.api.ServeProxy(apiCtx, ls.proxy) })
	}
	goRun(&mktWG, "marketplace", func() error { d.runMarketplace(mktCtx); return nil })
	if !d.profileSettled() {
		auxWG.Add(1)
		go func() { defer auxWG.Done(); d.probeProfile(mktCtx) }()
	}
	auxWG.Add(1)
	go func() { defer auxWG.Done(); d.forwardCommands(engCtx) }()
	if cfg.Metrics.Textfile != "" {
		// Stopped with the engine: the last write has the jobs' final state.
		auxWG.Add(1)
		go func() { defer auxWG.Done(); d.writeTextfile(engCtx) }()
	}

	d.watcher = config.NewWatcher(d.o.Config, cfg, config.WatcherOptions{Logger: d.log.With(logging.ComponentKey, "config")})
	if err := d.watcher.Start(ctx); err != nil {
		d.log.Warn("config file not watched; SIGHUP still reloads", "err", err)
	}
	auxWG.Add(1)
	go func() { defer auxWG.Done(); d.applyUpdates(ctx) }()
	if startSignals != nil {
		startSignals()
	}

	sdNotify(d.log, "READY=1\nSTATUS="+d.summary())
	tcp := "off"
	if ls.http != nil {
		tcp = ls.http.Addr().String()
	}
	d.log.Info("lmntd ready", "version", version.Version, "api", ls.api.Addr().String(),
		"bridge", ls.klipper.Addr().String(), "api_tcp", tcp, "socket_activated", ls.activated)

	auxWG.Add(1)
	go func() { defer auxWG.Done(); d.superviseStatus(ctx) }()

	<-ctx.Done()
	cause := context.Cause(ctx)
	sdNotify(d.log, "STOPPING=1\nSTATUS=stopping")
	d.log.Info("lmntd stopping", "reason", cause)

	stopAPI()
	apiWG.Wait()
	stopMkt()
	mktWG.Wait()
	stopEng()
	engWG.Wait()
	stopBridge()
	brWG.Wait()
	auxWG.Wait()
	if d.kcfg != nil {
		d.kcfg.Wait()
	}
	d.watcher.Wait()
	d.log.Info("lmntd stopped")
	if errors.Is(cause, ErrRestartRequested) {
		return ErrRestartRequested
	}
	return nil
}

// catchSignals starts catching SIGTERM/SIGINT (stop) and SIGHUP (reload).
// Nothing is acted on until start is called; stop ends the catching.
func (d *daemon) catchSignals(ctx context.Context) (start, stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	done := make(chan struct{})
	start = func() {
		go func() {
			for {
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				case s := <-ch:
					if s == syscall.SIGHUP {
						sdNotify(d.log, "RELOADING=1\nMONOTONIC_USEC="+monotonicUsec())
						d.watcher.Reload()
						sdNotify(d.log, "READY=1\nSTATUS="+d.summary())
						continue
					}
					d.stop(fmt.Errorf("signal %s", s))
				}
			}
		}()
	}
	stop = func() { signal.Stop(ch); close(done) }
	return start, stop
}

// klipperUIDs is the uid of klipper.user, the only peer the bridge accepts
// (besides root, never: Klipper must not run as root).
func (d *daemon) klipperUIDs(cfg *config.Config) []uint32 {
	u, err := user.Lookup(cfg.Klipper.User)
	if err != nil {
		d.log.Error("klipper.user does not exist: the bridge accepts only lmntd's own user until it is fixed (run lmnt setup)",
			"user", cfg.Klipper.User, "err", err)
		return nil
	}
	id, _ := strconv.ParseUint(u.Uid, 10, 32)
	return []uint32{uint32(id)}
}

// apiKey reads api.api_key_file once; no file ⇒ no key admits anyone.
func (d *daemon) apiKey(cfg *config.Config) func() []byte {
	if cfg.API.APIKeyFile == "" {
		return nil
	}
	data, err := os.ReadFile(cfg.API.APIKeyFile)
	if err != nil {
		d.log.Error("api.api_key_file unreadable: no API key is accepted", "file", cfg.API.APIKeyFile, "err", err)
		return nil
	}
	key := []byte(strings.TrimSpace(string(data)))
	return func() []byte { return key }
}

func (d *daemon) newClient(cfg *config.Config) (*marketplace.Client, error) {
	return d.newClientFor(cfg, d.apiProfile().Profile)
}

func (d *daemon) newClientFor(cfg *config.Config, profile string) (*marketplace.Client, error) {
	var tokenHosts []string // nil: the marketplace URL's host only
	if len(cfg.Marketplace.TokenHosts) > 0 {
		tokenHosts = cfg.Marketplace.TokenHosts
	}
	c, err := marketplace.New(marketplace.Options{
		Profile:             marketplace.Profile(profile),
		TokenHosts:          tokenHosts,
		BaseURL:             cfg.Marketplace.URL,
		CWSURL:              cfg.Marketplace.CWSURL,
		PushBaseURL:         cfg.Push.BaseURL,
		FirebaseProject:     cfg.Push.FirebaseProjectID,
		ExtraCAFile:         cfg.Marketplace.TLSCAFile,
		Development:         cfg.DevelopmentMode,
		StateDir:            cfg.Paths.StateDirectory,
		RequestTimeout:      cfg.Limits.RequestTimeout,
		DownloadTimeout:     cfg.Limits.DownloadTimeout,
		DownloadIdleTimeout: cfg.Limits.DownloadIdleTimeout,
		DownloadMinRate:     int64(cfg.Limits.DownloadMinRate),
		MaxDownloadBytes:    int64(cfg.Limits.MaxDownloadSize),
		UserAgent:           "lmntd/" + version.Version,
		Logger:              d.log.With(logging.ComponentKey, "marketplace"),
		OnPairingLost:       func(error) { d.kickLoops() },
		Auth:                marketplace.AuthPolicy{RefusalSpan: d.scaled(marketplace.DefaultRefusalSpan)},
		MaxRetryAfter:       d.scaled(marketplace.DefaultMaxRetryAfter),
		OnRequestError:      d.metrics.RequestFailed,
	})
	if err != nil {
		return nil, fmt.Errorf("marketplace client: %w", err)
	}
	return c, nil
}

// forwardCommands turns LMNT_READY from Klipper's console into the
// bed-clear confirmation.
func (d *daemon) forwardCommands(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-d.bridge.Commands():
			switch c.Name {
			case "LMNT_READY", "ready":
				if err := d.engine.ConfirmBedClear(); err != nil {
					d.log.Error("LMNT_READY", "err", err)
				} else {
					d.log.Info("bed confirmed clear from Klipper (LMNT_READY)")
				}
			default:
				d.log.Warn("unknown command from Klipper", "name", c.Name)
			}
		}
	}
}

func (d *daemon) logConfigReports(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r, ok := <-d.kcfg.Reports():
			if !ok {
				return
			}
			if r.OK() {
				d.log.Info("Klipper config checked", "summary", r.StatusLine())
			} else {
				d.log.Warn("Klipper config", "summary", r.StatusLine())
			}
		}
	}
}

// applyUpdates applies reloaded settings: log level and trusted clients at
// once (they are read where used), poll interval and limits by rebuilding
// the marketplace client and restarting its loops.
func (d *daemon) applyUpdates(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-d.watcher.Updates():
			if u.Err != nil {
				d.log.Error("config reload rejected; the running configuration stays", "err", u.Err)
				continue
			}
			if len(u.Changes) == 0 {
				continue
			}
			d.cfg.Store(u.Config)
			_ = d.level.UnmarshalText([]byte(u.Config.Log.Level))
			rebuild := false
			for _, c := range u.Changes {
				if c.Restart {
					continue
				}
				d.log.Info("config: applied", "key", c.Key, "old", c.Old, "new", c.New)
				if c.Key == "marketplace.check_interval" || strings.HasPrefix(c.Key, "limits.") {
					rebuild = true
				}
			}
			if rr := u.RestartRequired(); len(rr) > 0 {
				d.log.Warn("config: these changes take effect after a restart (systemctl restart lmntd, or lmnt restart --when-idle)", "keys", rr)
			}
			if rebuild {
				if c, err := d.newClient(u.Config); err != nil {
					d.log.Error("config: marketplace settings not applied", "err", err)
				} else {
					d.mkt.Store(c)
					d.kickLoops()
				}
			}
		}
	}
}
