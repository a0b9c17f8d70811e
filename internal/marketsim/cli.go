package marketsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const usage = `lmnt-marketsim: a fake LMNT Marketplace for development, demos and manual tests.

It serves the printer-side contract of both API profiles (current and legacy)
over HTTPS with its own test CA, plus a fake third-party storage host, a
Firebase-style push stream and a plain-http admin API on loopback.

USAGE
  lmnt-marketsim serve [flags]                  run the simulator (Ctrl-C stops it)
  lmnt-marketsim state                          printers, pairing sessions, URLs
  lmnt-marketsim approve CODE [--email E]       approve a pairing code, as the owner would in the web shop
  lmnt-marketsim create-job FILE.gcode [--printer ID] [--download gcs|firebase|storage|marketplace|lmnt-host|none]
                                                encrypt a G-code file for the printer's key and queue it
  lmnt-marketsim status JOB_ID                  the job-status reports the printer sent
  lmnt-marketsim add-user EMAIL                 add a web-shop user (password read from stdin)
  lmnt-marketsim fault CALL [--status N] [--latency D] [--truncate-at N] [--silent] [--drop] [--count N]
  lmnt-marketsim fault --clear                  inject or clear faults (calls: %s)
  lmnt-marketsim expire-tokens PRINTER_ID       printer tokens now count as expired (refresh still works)
  lmnt-marketsim revoke-tokens PRINTER_ID       the marketplace forgets the printer (refresh gets 401)

Every command but serve talks to the admin API (--admin, default %s).

RUN IT NEXT TO A PRINTER
  1. lmnt-marketsim serve            (add --auto-approve to skip step 3)
     It prints its URLs and writes the test CA to <dir>/ca.pem.
  2. Point lmntd at it, e.g. in /etc/lmntd/lmntd.toml (the printed snippet):
         api_profile = "current"
         [marketplace]
         url = "https://127.0.0.1:8443"
         tls_ca_file = "/tmp/lmnt-marketsim/ca.pem"
         [push]
         base_url = "https://127.0.0.1:8445"
     then pair:  lmnt pair   (it shows a code)
  3. lmnt-marketsim approve CODE
  4. lmnt-marketsim create-job ~/part.gcode
     The printer receives the job on its next poll (at once with push), downloads
     and decrypts it; follow the reports with: lmnt-marketsim status JOB_ID
  For the legacy profile: api_profile = "legacy", cws_url = the same URL as url,
  and register with the demo user (demo@example.com / demo).
  On another machine use --api 0.0.0.0:8443 --hostname NAME so the certificate
  matches, and copy ca.pem to the printer.

ADMIN API (curl)
  curl -s %[2]s/admin/state
  curl -s -XPOST %[2]s/admin/pairings/approve -H 'Content-Type: application/json' -d '{"code":"ABC234"}'
  curl -s -XPOST '%[2]s/admin/jobs?download=gcs' --data-binary @part.gcode
  curl -s %[2]s/admin/jobs/JOB_ID/status
  curl -s -XPUT %[2]s/admin/faults/poll -H 'Content-Type: application/json' -d '{"status":503,"count":3}'
  curl -s -XDELETE %[2]s/admin/faults

SERVE FLAGS
`

const defaultAdmin = "http://127.0.0.1:8480"

// Main runs the lmnt-marketsim command line; it returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		return 0
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(rest, stdout, stderr)
	case "state", "approve", "create-job", "status", "add-user", "fault", "expire-tokens", "revoke-tokens":
		err = runAdmin(cmd, rest, stdin, stdout)
	default:
		err = fmt.Errorf("unknown command %q (see --help)", cmd)
	}
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "lmnt-marketsim:", err)
		return 1
	}
	return 0
}

func printUsage(w io.Writer) {
	calls := make([]string, len(AllCalls))
	for i, c := range AllCalls {
		calls[i] = string(c)
	}
	fmt.Fprintf(w, usage, strings.Join(calls, ", "), defaultAdmin)
	fs, _ := serveFlags()
	fs.SetOutput(w)
	fs.PrintDefaults()
}

type serveConfig struct {
	api, storage, push, admin string
	dir                       string
	hostnames                 []string
	plain, autoApprove, seal  bool
	tokenLifetime, keepAlive  time.Duration
	verbose                   bool
	lmntHost                  string
	varying, altDEK           bool
	legacyOnly                bool
}

func serveFlags() (*pflag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.StringVar(&c.api, "api", "127.0.0.1:8443", "marketplace API listen address (also the legacy cws login)")
	fs.StringVar(&c.storage, "storage", "127.0.0.1:8444", "fake third-party storage host listen address")
	fs.StringVar(&c.push, "push", "127.0.0.1:8445", "push stream (Realtime Database) listen address")
	fs.StringVar(&c.admin, "admin", "127.0.0.1:8480", "admin API listen address (plain http; keep it on loopback)")
	fs.StringVar(&c.lmntHost, "lmnt-host", "127.0.0.1:0", "second LMNT host listen address (downloads that need the printer token; default: a free port)")
	fs.BoolVar(&c.varying, "varying", false, "vary every optional field's shape as the real server's builds do, and add poll entries to skip")
	fs.BoolVar(&c.altDEK, "alt-dek-field", false, "name the DEK package gcode_dek_package instead of gcode_dek_encrypted_hex")
	fs.BoolVar(&c.legacyOnly, "legacy-only", false, "serve only the legacy profile's paths (a seed-era marketplace)")
	fs.StringVar(&c.dir, "dir", filepath.Join(os.TempDir(), "lmnt-marketsim"), "directory for ca.pem")
	fs.StringSliceVar(&c.hostnames, "hostname", nil, "extra DNS name for the server certificate (repeatable)")
	fs.BoolVar(&c.plain, "plain-http", false, "serve plain http (loopback demos; lmntd accepts it only for loopback)")
	fs.BoolVar(&c.autoApprove, "auto-approve", false, "approve every pairing as it starts (owned by the demo user)")
	fs.BoolVar(&c.seal, "seal-pairing", false, "answer pair/complete sealed to the printer key")
	fs.DurationVar(&c.tokenLifetime, "token-lifetime", 30*24*time.Hour, "printer token lifetime")
	fs.DurationVar(&c.keepAlive, "keep-alive", 30*time.Second, "push stream keep-alive interval")
	fs.BoolVarP(&c.verbose, "verbose", "v", false, "debug logging")
	return fs, c
}

func runServe(args []string, stdout, stderr io.Writer) error {
	fs, c := serveFlags()
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s, err := New(Options{
		PlainHTTP: c.plain, APIAddr: c.api, StorageAddr: c.storage, PushAddr: c.push, AdminAddr: c.admin,
		Hostnames: c.hostnames, TokenLifetime: c.tokenLifetime, AutoApprove: c.autoApprove,
		SealPairing: c.seal, KeepAlive: c.keepAlive, Logger: log, LMNTHostAddr: c.lmntHost,
		Varying: c.varying, AltDEKField: c.altDEK, LegacyOnly: c.legacyOnly,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	const demoEmail, demoPassword = "demo@example.com", "demo"
	if _, err := s.AddUser(demoEmail, demoPassword); err != nil {
		return err
	}
	caPath := "(none: plain http)"
	if pem := s.CACertPEM(); pem != nil {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return err
		}
		caPath = filepath.Join(c.dir, "ca.pem")
		if err := os.WriteFile(caPath, pem, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `lmnt-marketsim running
  marketplace API  %s   (base URL of both profiles; legacy cws_url too)
  storage host     %s
  second LMNT host %s   (create-job --download lmnt-host: needs the printer token)
  push stream      %s
  admin API        %s
  test CA          %s
  demo user        %s / %s

lmntd settings:
  api_profile = "current"
  [marketplace]
  url = %q
  tls_ca_file = %q
  [push]
  base_url = %q
`, s.URL(), s.StorageURL(), s.LMNTHostURL(), s.PushURL(), s.AdminURL(), caPath, demoEmail, demoPassword, s.URL(), caPath, s.PushURL())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Fprintln(stdout, "lmnt-marketsim stopping")
	return nil
}

// runAdmin runs a command against the admin API.
func runAdmin(cmd string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := pflag.NewFlagSet(cmd, pflag.ContinueOnError)
	admin := fs.String("admin", defaultAdmin, "admin API URL")
	email := fs.String("email", "", "approve: the owner's email (default: the first user)")
	printer := fs.String("printer", "", "create-job: printer id (default: the only printer)")
	download := fs.String("download", "gcs", "create-job: where the download URL points: gcs, firebase, storage, marketplace, lmnt-host, none")
	var af adminFault
	clearFaults := fs.Bool("clear", false, "fault: remove every fault")
	fs.IntVar(&af.Status, "status", 0, "fault: answer this HTTP status")
	fs.StringVar(&af.Latency, "latency", "", "fault: delay, e.g. 2s")
	fs.Int64Var(&af.TruncateAt, "truncate-at", 0, "fault: cut download bodies after N bytes")
	fs.BoolVar(&af.Silent, "silent", false, "fault: never answer (push: headers, then silence)")
	fs.BoolVar(&af.Drop, "drop", false, "fault: close the connection (push: after the first put)")
	fs.IntVar(&af.Count, "count", 0, "fault: only for the next N calls (0: until cleared)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pos := fs.Args()
	need := func(n int, what string) error {
		if len(pos) != n {
			return fmt.Errorf("%s: want %s", cmd, what)
		}
		return nil
	}
	base := strings.TrimRight(*admin, "/")
	switch cmd {
	case "state":
		return adminCall(stdout, http.MethodGet, base+"/admin/state", "", nil)
	case "approve":
		if err := need(1, "CODE"); err != nil {
			return err
		}
		return adminCall(stdout, http.MethodPost, base+"/admin/pairings/approve", "application/json",
			mustJSON(map[string]string{"code": pos[0], "email": *email}))
	case "create-job":
		if err := need(1, "FILE.gcode"); err != nil {
			return err
		}
		gcode, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		q := url.Values{"download": {*download}}
		if *printer != "" {
			q.Set("printer_id", *printer)
		}
		return adminCall(stdout, http.MethodPost, base+"/admin/jobs?"+q.Encode(), "application/octet-stream", gcode)
	case "status":
		if err := need(1, "JOB_ID"); err != nil {
			return err
		}
		return adminCall(stdout, http.MethodGet, base+"/admin/jobs/"+url.PathEscape(pos[0])+"/status", "", nil)
	case "add-user":
		if err := need(1, "EMAIL"); err != nil {
			return err
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("add-user: reading the password from stdin: %w", err)
		}
		return adminCall(stdout, http.MethodPost, base+"/admin/users", "application/json",
			mustJSON(map[string]string{"email": pos[0], "password": strings.TrimRight(line, "\r\n")}))
	case "fault":
		if *clearFaults {
			return adminCall(stdout, http.MethodDelete, base+"/admin/faults", "", nil)
		}
		if err := need(1, "CALL"); err != nil {
			return err
		}
		return adminCall(stdout, http.MethodPut, base+"/admin/faults/"+url.PathEscape(pos[0]), "application/json", mustJSON(af))
	default: // expire-tokens, revoke-tokens
		if err := need(1, "PRINTER_ID"); err != nil {
			return err
		}
		return adminCall(stdout, http.MethodPost, base+"/admin/printers/"+url.PathEscape(pos[0])+"/"+cmd, "", nil)
	}
}

func adminCall(stdout io.Writer, method, u, contentType string, body []byte) error {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w (is `lmnt-marketsim serve` running?)", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if len(out) > 0 {
		var pretty bytes.Buffer
		if json.Indent(&pretty, out, "", "  ") == nil {
			out = append(pretty.Bytes(), '\n')
		}
		_, _ = stdout.Write(out)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin API answered %s", resp.Status)
	}
	return nil
}
