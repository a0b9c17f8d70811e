package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/apiclient"
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/doctor"
)

func (e *env) pair(args []string) (int, error) {
	fs := e.flags("pair", "pair [--name NAME] [--manufacturer M] [--model M] [--extruders N] [--force] [--timeout D] [--no-wait]")
	name := fs.String("name", "", "printer name shown in the marketplace (default: the host name)")
	mfr := fs.String("manufacturer", "", "printer manufacturer")
	model := fs.String("model", "", "printer model")
	extruders := fs.Int("extruders", 1, "number of extruders (1-4)")
	force := fs.Bool("force", false, "pair again although the printer is paired")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up waiting after this long")
	noWait := fs.Bool("no-wait", false, "show the code and return; lmntd completes the pairing in the background (first-boot scripts)")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, *timeout)
	defer cancel()
	var p apitype.Pairing
	if err := e.c.Post(ctx, "/machine/lmnt_marketplace/pair/start", apitype.PairRequest{PrinterName: *name, Manufacturer: *mfr,
		Model: *model, ExtruderCount: *extruders, Force: *force}, &p); err != nil {
		return 1, err
	}
	if *name != "" && p.PrinterName != "" && p.PrinterName != *name {
		fmt.Fprintf(e.stderr, "lmnt pair: warning: a pairing code was already pending for %q; --name %q is not used.\n"+
			"  Enter this code to pair as %q, or let it expire and pair again.\n", p.PrinterName, *name, p.PrinterName)
	}
	e.showPairingCode(p)
	if *noWait {
		fmt.Fprintln(e.stdout, "lmntd completes the pairing once it is approved; `lmnt status` shows when it is done.")
		return 0, nil
	}
	return e.followPairing(ctx, p)
}

// showPairingCode prints the code and what to do with it.
func (e *env) showPairingCode(p apitype.Pairing) {
	w := e.stdout
	fmt.Fprintf(w, "Pairing code: %s\n", p.PairingCode)
	fmt.Fprintln(w, "Enter it in the LMNT Marketplace (My printers → Add printer) to pair this printer.")
	if p.ExpiresAt != nil {
		fmt.Fprintf(w, "The code expires at %s.\n", p.ExpiresAt.Local().Format("15:04:05"))
	}
}

// followPairing waits, with progress, until the pairing session ends.
func (e *env) followPairing(ctx context.Context, p apitype.Pairing) (int, error) {
	w := e.stdout
	tty := false
	if f, ok := e.stdout.(*os.File); ok {
		tty = isTerminal(f)
	}
	spin := []string{"|", "/", "-", `\`}
	last := p.Status
	fmt.Fprintf(w, "status: %s\n", last)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			if e.ctx.Err() != nil {
				return 1, errors.New("stopped waiting; lmntd keeps waiting for the approval until the code expires (lmnt status)")
			}
			return 1, errors.New("gave up waiting for approval (--timeout); lmntd keeps waiting until the code expires")
		case <-time.After(time.Second):
		}
		if err := e.c.Get(ctx, "/machine/lmnt_marketplace/pair/status", &p); err != nil {
			return 1, err
		}
		if p.Status != last {
			if tty {
				fmt.Fprint(w, "\r\033[K")
			}
			fmt.Fprintf(w, "status: %s", p.Status)
			if p.Message != "" {
				fmt.Fprintf(w, " (%s)", p.Message)
			}
			fmt.Fprintln(w)
			last = p.Status
		} else if tty {
			left := ""
			if p.ExpiresAt != nil {
				left = fmt.Sprintf(", code expires in %s", time.Until(*p.ExpiresAt).Round(time.Second))
			}
			fmt.Fprintf(w, "\r\033[Kwaiting for approval %s%s", spin[i%len(spin)], left)
		}
		switch p.Status {
		case "paired":
			if tty {
				fmt.Fprint(w, "\r\033[K")
			}
			fmt.Fprintf(w, "Paired: printer %s", p.PrinterID)
			if p.PrinterName != "" {
				fmt.Fprintf(w, " (%s)", p.PrinterName)
			}
			fmt.Fprintln(w)
			return 0, nil
		case "expired", "failed":
			return 1, fmt.Errorf("pairing %s: %s", p.Status, p.Message)
		}
	}
}

func (e *env) register(args []string) (int, error) {
	fs := e.flags("register", "register --email EMAIL [--password-file F] --name NAME [--manufacturer M] [--model M]")
	email := fs.String("email", "", "marketplace account e-mail")
	pwFile := fs.String("password-file", "", "read the password from this file (default: ask)")
	name := fs.String("name", "", "printer name shown in the marketplace")
	mfr := fs.String("manufacturer", "", "printer manufacturer")
	model := fs.String("model", "", "printer model")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if *email == "" || *name == "" {
		return 2, errors.New("--email and --name are required")
	}
	pw, err := e.readPassword(*pwFile)
	if err != nil {
		return 1, err
	}
	var login apitype.LoginResult
	err = e.c.Post(e.ctx, "/machine/lmnt_marketplace/user_login", map[string]string{"username": *email, "password": pw}, &login)
	pw = ""
	if err != nil {
		return 1, err
	}
	var reg apitype.RegisterResult
	if err := e.c.Post(e.ctx, "/machine/lmnt_marketplace/register_printer", apitype.RegisterRequest{UserToken: login.Token,
		PrinterName: *name, Manufacturer: *mfr, Model: *model}, &reg); err != nil {
		return 1, err
	}
	fmt.Fprintf(e.stdout, "Registered: printer %s (%s), token valid until %s\n", reg.ID, reg.PrinterName, reg.TokenExpires.Local().Format(time.RFC1123))
	return 0, nil
}

// readPassword reads the password from a file, or from the terminal
// without echo, or from stdin's first line.
func (e *env) readPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	fmt.Fprint(e.stderr, "Password: ")
	if f, ok := e.stdin.(*os.File); ok && isTerminal(f) {
		fd := int(f.Fd())
		old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err == nil {
			noEcho := *old
			noEcho.Lflag &^= unix.ECHO
			_ = unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho)
			defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old); fmt.Fprintln(e.stderr) }()
		}
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password given")
	}
	return line, nil
}

func (e *env) print(args []string) (int, error) {
	fs := e.flags("print", "print FILE [--follow] [--name NAME] [--fernet-key-file F | --dek-package-file F --iv HEX]")
	follow := fs.Bool("follow", false, "show the job's progress until it ends (exit 0 when the print succeeded)")
	fernetFile := fs.String("fernet-key-file", "", "file holding the Fernet key the file is encrypted with")
	dekFile := fs.String("dek-package-file", "", "file holding the DEK package (B64:B64:B64) sealed to this printer")
	iv := fs.String("iv", "", "the AES-CBC IV (32 hex characters), with --dek-package-file")
	name := fs.String("name", "", "job name (default: the file name)")
	if err := parse(fs, args, 1); err != nil {
		return 2, err
	}
	path := fs.Arg(0)
	fields := map[string]string{}
	switch {
	case *fernetFile != "" && *dekFile != "":
		return 2, errors.New("give --fernet-key-file or --dek-package-file, not both")
	case *fernetFile != "":
		k, err := readSecretFile(*fernetFile)
		if err != nil {
			return 1, fileErrorf("--fernet-key-file: %v", err)
		}
		fields["fernet_key"] = k
	case *dekFile != "":
		if *iv == "" {
			return 2, errors.New("--dek-package-file needs --iv")
		}
		k, err := readSecretFile(*dekFile)
		if err != nil {
			return 1, fileErrorf("--dek-package-file: %v", err)
		}
		fields["dek_package"], fields["iv"] = k, *iv
	case *iv != "":
		return 2, errors.New("--iv needs --dek-package-file")
	}
	f, err := openPrintFile(path, len(fields) > 0)
	if err != nil {
		return 1, err
	}
	defer f.Close()
	if *name == "" {
		*name = filepath.Base(path)
	}
	fields["filename"] = *name
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			for k, v := range fields {
				if err := mw.WriteField(k, v); err != nil {
					return err
				}
			}
			part, err := mw.CreateFormFile("file", *name)
			if err != nil {
				return err
			}
			if _, err := io.Copy(part, f); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	var res struct {
		JobID   string `json:"job_id"`
		Message string `json:"message"`
	}
	if err := e.c.Do(e.ctx, http.MethodPost, "/machine/encrypted_print/start_print", pr, mw.FormDataContentType(), &res); err != nil {
		return 1, err
	}
	fmt.Fprintf(e.stdout, "%s queued as job %s\n", *name, res.JobID)
	if *follow {
		return e.followJob(e.ctx, res.JobID)
	}
	fmt.Fprintf(e.stdout, "Follow it with: lmnt print --follow, lmnt status --watch or lmnt jobs\n")
	return 0, nil
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %v", path, plainErr(err))
	}
	defer clear(b)
	return strings.TrimSpace(string(b)), nil
}

func (e *env) doctor(args []string) (int, error) {
	fs := e.flags("doctor", "doctor [--offline] [--json] [--config FILE]")
	offline := fs.Bool("offline", false, "skip the checks that need the network")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cfgFile := fs.String("config", "", "config file for the local checks when lmntd is not running")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	path := "/lmnt/v1/doctor"
	if *offline {
		path += "?offline=1"
	}
	var r apitype.DoctorReport
	if err := e.c.Get(e.ctx, path, &r); err != nil {
		var ae *apiclient.Error
		if errors.As(err, &ae) {
			return 2, err
		}
		r = doctor.Local(*cfgFile, err)
	}
	if *asJSON {
		if err := e.printJSON(r); err != nil {
			return 2, err
		}
	} else {
		for _, c := range r.Checks {
			e.checkLine(c)
		}
		fmt.Fprintf(e.stdout, "health: %s\n", r.Health)
	}
	switch r.Health {
	case apitype.HealthOK:
		return 0, nil
	case apitype.HealthDegraded:
		return 1, nil
	}
	return 2, nil
}

// checkLine prints one doctor check within 80 columns: the result and
// the check's name, its detail (wrapped under it when long) and, when it
// did not pass, the fix.
func (e *env) checkLine(c apitype.Check) {
	const indent = "     "
	head := fmt.Sprintf("%-4s %s", strings.ToUpper(c.Result), c.Name)
	if c.Required && c.Result != apitype.CheckOK && c.Result != apitype.CheckSkip {
		head += " (required)"
	}
	if line := head + ": " + c.Detail; len([]rune(line)) <= 80 {
		fmt.Fprintln(e.stdout, line)
	} else {
		fmt.Fprintln(e.stdout, head)
		fmt.Fprintln(e.stdout, indent+wrap(c.Detail, 80-len(indent), indent))
	}
	if c.Fix != "" && c.Result != apitype.CheckOK {
		fmt.Fprintln(e.stdout, indent+wrap("fix: "+c.Fix, 80-len(indent), indent))
	}
}

func (e *env) keys(args []string) (int, error) {
	const keysUsage = `Usage: lmnt keys show [--json]
       lmnt keys import-legacy [--dir DIR] [--remove-source] [--replace]
       lmnt keys reseal --to tpm|software

  show           the printer key's id, public key and how it is sealed
  import-legacy  take over the old Moonraker plugin's key (and token)
  reseal         seal the key with the TPM or the software sealer

Run lmnt keys COMMAND --help for its flags.
`
	if len(args) == 0 {
		fmt.Fprint(e.stderr, keysUsage)
		return 2, errors.New("missing command: show, import-legacy or reseal")
	}
	switch args[0] {
	case "--help", "-h", "help":
		fmt.Fprint(e.stdout, keysUsage)
		return 0, nil
	case "show":
		fs := e.flags("keys show", "keys show [--json]")
		asJSON := fs.Bool("json", false, "print as JSON")
		if err := parse(fs, args[1:], 0); err != nil {
			return 2, err
		}
		var k apitype.KeysInfo
		if err := e.c.Get(e.ctx, "/lmnt/v1/keys", &k); err != nil {
			return 1, err
		}
		if *asJSON {
			return 0, e.printJSON(k)
		}
		fmt.Fprintf(e.stdout, "state:       %s\n", k.State)
		if k.KeyID != "" {
			fmt.Fprintf(e.stdout, "key id:      %s\n", k.KeyID)
		}
		if k.PublicKey != "" {
			fmt.Fprintf(e.stdout, "public key:  %s (%s)\n", k.PublicKey, k.KeyType)
		}
		if k.Backend != "" {
			fmt.Fprintf(e.stdout, "sealed with: %s (new seals: %s)\n", k.Backend, k.Configured)
		}
		if k.Problem != "" {
			fmt.Fprintf(e.stdout, "problem:     %s\nwhat to do:  %s\n", k.Problem, k.Advice)
			return 1, nil
		}
		return 0, nil
	case "import-legacy":
		fs := e.flags("keys import-legacy", "keys import-legacy [--dir DIR] [--remove-source] [--replace]")
		dir := fs.String("dir", "", "the old plugin's data directory (default: printer_data/lmnt_marketplace next to printer.cfg)")
		remove := fs.Bool("remove-source", false, "after a verified import, overwrite and delete the old plugin's key and token files")
		replace := fs.Bool("replace", false, "replace the current key although the printer is paired with it")
		if err := parse(fs, args[1:], 0); err != nil {
			return 2, err
		}
		var res apitype.ImportLegacyResult
		if err := e.c.Post(e.ctx, "/lmnt/v1/keys/import-legacy", apitype.ImportLegacyRequest{Dir: *dir, RemoveSource: *remove, Replace: *replace}, &res); err != nil {
			return 1, err
		}
		if res.Unchanged {
			fmt.Fprintf(e.stdout, "the old plugin's key %s is already this printer's key\n", short(res.KeyID))
		} else {
			fmt.Fprintf(e.stdout, "imported key %s from %s\n", short(res.KeyID), res.Source)
		}
		if res.TokenImported {
			fmt.Fprintf(e.stdout, "imported the printer token: paired as printer %s\n", res.PrinterID)
		}
		for _, f := range res.Removed {
			fmt.Fprintf(e.stdout, "removed %s\n", f)
		}
		return 0, nil
	case "reseal":
		fs := e.flags("keys reseal", "keys reseal --to tpm|software")
		to := fs.String("to", "", "backend to seal the key with: tpm or software")
		if err := parse(fs, args[1:], 0); err != nil {
			return 2, err
		}
		if *to != "tpm" && *to != "software" {
			return 2, errors.New("--to must be tpm or software")
		}
		var k apitype.KeysInfo
		if err := e.c.Post(e.ctx, "/lmnt/v1/keys/reseal", map[string]string{"to": *to}, &k); err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "key %s is now sealed with %s\n", short(k.KeyID), k.Backend)
		return 0, nil
	}
	fmt.Fprint(e.stderr, keysUsage)
	return 2, fmt.Errorf("unknown keys command %q: want show, import-legacy or reseal", args[0])
}
