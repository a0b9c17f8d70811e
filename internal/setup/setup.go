// Package setup wires lmntd into an existing Klipper installation (the logic
// of `lmnt setup`) and takes it out again (`lmnt setup --remove`).
//
// It finds Klipper's service user, printer_data and klippy/extras (from the
// klipper*.service units of MainsailOS, BTT and KIAUH installs, several
// instances included, or from flags for custom paths), then, each step
// idempotent and printed as it happens:
//
//   - links the Klipper extras shipped in /usr/share/lmntd/klipper into
//     klippy/extras;
//   - adds Klipper's user to group lmnt, which may open lmntd's sockets;
//   - grants lmntd's user read access to Klipper's config directory with
//     POSIX ACLs on exactly the path down to it (Debian homes are 0700);
//   - writes a drop-in for lmntd.service that binds that directory
//     read-only into lmntd's otherwise home-less sandbox;
//   - adds [encrypted_file_bridge], [secure_print] and the SDCARD_PRINT_FILE
//     macro to printer.cfg before the SAVE_CONFIG block (after a backup);
//   - lists lmntd in moonraker.asvc so Moonraker may restart it;
//   - sets klipper.user and klipper.config_file in a drop-in,
//     /etc/lmntd/lmntd.toml.d/50-setup.toml (lmntd.toml stays the owner's);
//   - with ImportLegacy, hands the old plugin's key and token to lmntd.
//
// Everything it changed is recorded in /etc/lmntd/setup.json, so Remove
// undoes exactly that. On a print farm, a further Klipper instance gets its
// own lmntd@NAME, with its own files and manifest (see target.go). All host
// paths are resolved under Options.Root, so tests run on fixture trees.
package setup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/identity"
)

// Names and places fixed by the package (systemd/, goreleaser.yaml).
const (
	ServiceUser  = "lmntd"
	SocketGroup  = "lmnt"
	ServiceUnit  = "lmntd.service"
	DefaultShare = "/usr/share/lmntd/klipper"
	// DefaultStaging is lmntd's socket directory: tmpfs, visible (read-only)
	// inside lmntd's sandbox.
	DefaultStaging = "/run/lmntd"
	DropInFile     = "/etc/systemd/system/lmntd.service.d/klipper.conf"
	ConfigFile     = "/etc/lmntd/lmntd.toml"
	// ConfigDropIn holds the settings setup makes (internal/config reads
	// ConfigFile + ".d/*.toml" after ConfigFile).
	ConfigDropIn = "/etc/lmntd/lmntd.toml.d/50-setup.toml"
	// NetworkDropIn holds the network the owner allowed to use the status
	// page (lmnt setup --allow-network), apart from ConfigDropIn so a later
	// setup run without the option keeps it.
	NetworkDropIn = "/etc/lmntd/lmntd.toml.d/60-allow-network.toml"
	ManifestFile  = "/etc/lmntd/setup.json"
	asvcService   = "lmntd"
	backupPattern = "%s.lmntd-%s.bak"
)

// Extras are the Klipper extras the package ships.
var Extras = []string{"encrypted_file_bridge.py", "secure_print.py"}

// Errors callers can tell apart.
var (
	// ErrAmbiguous means several Klipper instances exist and none was chosen.
	ErrAmbiguous = errors.New("setup: several Klipper instances; choose one with --instance")
	// ErrNoInstance means the chosen instance does not exist.
	ErrNoInstance = errors.New("setup: no such Klipper instance")
	// ErrOtherInstance means setup already wired another instance.
	ErrOtherInstance = errors.New("setup: lmntd is already set up for another Klipper instance; run `lmnt setup --remove` first")
	// ErrUnsupportedPath means a path cannot be written into a unit file safely.
	ErrUnsupportedPath = errors.New("setup: unsupported path")
	// ErrNotInstalled means a file the lmntd package ships is missing.
	ErrNotInstalled = errors.New("setup: lmntd's package files are missing")
	// ErrNoImporter means ImportLegacy was asked for without a way to reach lmntd.
	ErrNoImporter = errors.New("setup: no way to hand the legacy key to lmntd")
)

// LegacyImporter asks the running lmntd to import the old plugin's key and
// token from dir and to seal and store them: only lmntd may write its state
// directory, and the key must be sealed to what lmntd itself can read (its
// TPM access, its view of the board identity). dir is a private copy lmntd
// can read from inside its sandbox, which hides the home directories.
type LegacyImporter interface {
	ImportLegacy(ctx context.Context, dir string) (LegacyResult, error)
}

// LegacyResult is what lmntd reports after an import.
type LegacyResult struct {
	KeyID         string
	TokenImported bool
	PrinterID     string
}

// Activator makes systemd and lmntd pick up changed units and settings:
// daemon-reload, the sockets of a farm instance started when enabled, then
// a restart of the running lmntd once no job is running. instance is the
// lmntd instance ("" for lmntd.service). Stop stops a farm instance's
// lmntd@instance.service and sockets before --remove takes them out.
type Activator interface {
	Activate(ctx context.Context, instance string) error
	Stop(ctx context.Context, instance string) error
}

// Options configure Run and Remove.
type Options struct {
	// Root is the host's root directory ("/" when empty); tests use fixture trees.
	Root string
	// Instance chooses among several Klipper instances (unit name such as
	// "klipper-printer_1", or a suffix such as "printer_1").
	Instance string
	// ConfigFile, KlipperUser and ExtrasDir describe a custom installation
	// instead of, or on top of, what detection finds.
	ConfigFile, KlipperUser, ExtrasDir string
	// ShareDir holds the extras to link (DefaultShare when empty).
	ShareDir string
	// DryRun prints what would change, with diffs, and changes nothing.
	DryRun bool
	// ImportLegacy hands the old plugin's key and token to lmntd.
	ImportLegacy bool
	Importer     LegacyImporter
	// StagingDir is where the copy for lmntd is made (DefaultStaging when
	// empty): on tmpfs, inside lmntd's view, removed after the import.
	StagingDir string
	// AllowNetwork, when valid, lets browsers on that network use the
	// status page (api.trusted_clients); off unless the owner says yes.
	AllowNetwork netip.Prefix
	// Activator is called after changes on the live system; nil prints the
	// commands to run instead.
	Activator Activator
	// Out receives the step-by-step report (io.Discard when nil).
	Out io.Writer
	// Logger; nil discards.
	Logger *slog.Logger
	// Now stamps backup names (time.Now when nil).
	Now func() time.Time
}

// Status of one step.
type Status string

// Step statuses.
const (
	Changed     Status = "changed"
	Unchanged   Status = "ok"
	WouldChange Status = "would"
	Warning     Status = "warning"
	Skipped     Status = "skipped"
)

// Step is one line of the report.
type Step struct {
	Name   string
	Status Status
	Detail string
	// Diff is the unified diff of a file change (dry runs print it).
	Diff string
}

// Report is what Run or Remove did.
type Report struct {
	Instance Instance
	// LmntdInstance is the lmntd@ instance wired ("" for lmntd.service).
	LmntdInstance string
	Steps         []Step
	// RestartKlipper is set when Klipper must restart for a change to apply
	// (new group, new extras, printer.cfg).
	RestartKlipper bool
}

// Changed reports whether any step changed (or, dry, would change) something.
func (r *Report) Changed() bool {
	return slices.ContainsFunc(r.Steps, func(s Step) bool { return s.Status == Changed || s.Status == WouldChange })
}

type runner struct {
	ctx    context.Context
	opts   Options
	root   string
	out    io.Writer
	log    *slog.Logger
	report *Report
	m      *manifest
	t      target // the lmntd being wired
	// removing is set by Remove (finish then reports a stopped instance).
	removing bool
}

func newRunner(ctx context.Context, opts Options) *runner {
	r := &runner{ctx: ctx, opts: opts, root: filepath.Clean(opts.Root), out: opts.Out, log: opts.Logger, report: &Report{}, t: defaultTarget()}
	if opts.Root == "" {
		r.root = "/"
	}
	if r.out == nil {
		r.out = io.Discard
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.opts.ShareDir == "" {
		r.opts.ShareDir = DefaultShare
	}
	if r.opts.StagingDir == "" {
		r.opts.StagingDir = DefaultStaging
	}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	return r
}

// at maps a host path to the tree at Root.
func (r *runner) at(host string) string { return filepath.Join(r.root, host) }

func (r *runner) live() bool { return r.root == "/" }

func (r *runner) step(name string, st Status, detail string, diff string) {
	if st == Changed && r.opts.DryRun {
		st = WouldChange
	}
	r.report.Steps = append(r.report.Steps, Step{Name: name, Status: st, Detail: detail, Diff: diff})
	fmt.Fprintf(r.out, "  %-8s %-15s %s\n", "["+string(st)+"]", name, detail)
	if diff != "" && r.opts.DryRun {
		for _, l := range strings.Split(strings.TrimRight(diff, "\n"), "\n") {
			fmt.Fprintf(r.out, "      %s\n", l)
		}
	}
	r.log.Info("setup step", "step", name, "status", string(st), "detail", detail)
}

// saveManifest persists the record after each change, so a failure midway
// still leaves --remove able to undo what was done.
func (r *runner) saveManifest() error {
	if r.opts.DryRun {
		return nil
	}
	return r.m.save(r.at(r.t.manifest))
}

// RunEvery is `lmnt setup` without --instance: with one Klipper instance it
// is Run; with several (a farm host) it wires every one, each a printer of
// its own (the first the default lmntd, the others lmntd@NAME), in the
// order Detect finds them. It stops at the first instance that fails.
func RunEvery(ctx context.Context, opts Options) ([]*Report, error) {
	if opts.Instance != "" || opts.ConfigFile != "" {
		rep, err := Run(ctx, opts)
		return []*Report{rep}, err
	}
	root := opts.Root
	if root == "" {
		root = "/"
	}
	found, _, err := Detect(root)
	if err != nil || len(found) < 2 {
		rep, err := Run(ctx, opts)
		return []*Report{rep}, err
	}
	if opts.ImportLegacy {
		// The old plugin's key is one printer's: the owner says which.
		_, err := Run(ctx, opts)
		return nil, err
	}
	var reps []*Report
	for _, in := range found {
		one := opts
		one.Instance = in.Name
		rep, err := Run(ctx, one)
		reps = append(reps, rep)
		if err != nil {
			return reps, fmt.Errorf("setup: Klipper instance %s: %w", in.Name, err)
		}
	}
	return reps, nil
}

// Run wires lmntd into the chosen Klipper instance. It is idempotent: a
// second run reports every step "ok".
func Run(ctx context.Context, opts Options) (*Report, error) {
	r := newRunner(ctx, opts)
	in, err := r.resolveInstance()
	if err != nil {
		return r.report, err
	}
	r.report.Instance = in
	mode := ""
	if r.opts.DryRun {
		mode = " (dry run: nothing is changed)"
	}
	fmt.Fprintf(r.out, "lmnt setup: Klipper instance %s%s\n", in, mode)
	t, m, err := r.chooseTarget(in)
	if err != nil {
		return r.report, err
	}
	r.t = t
	r.report.LmntdInstance = t.name
	if t.name != "" {
		fmt.Fprintf(r.out, "lmnt setup: the default lmntd serves another Klipper instance; this one gets its own: %s\n", t.unit())
	}
	if m == nil {
		m = &manifest{Version: manifestVersion}
	}
	m.Instance, m.KlipperUser, m.ConfigFile = in.Name, in.User, in.ConfigFile
	r.m = m

	users, err := readPasswd(r.root)
	if err != nil {
		return r.report, err
	}
	svc, ok := users[ServiceUser]
	if !ok {
		return r.report, fmt.Errorf("%w: user %q does not exist (install the lmntd package first)", ErrNotInstalled, ServiceUser)
	}

	for _, fn := range []func(Instance) error{
		r.linkExtras,
		r.joinGroup,
		func(in Instance) error { return r.grantConfigAccess(in, svc.UID) },
		func(in Instance) error { return r.createStubFolder(in, svc) },
		r.writeDropIn,
		r.patchPrinterCfg,
		r.addToASVC,
		r.setDaemonConfig,
		r.allowNetwork,
		func(in Instance) error { return r.importLegacy(in, svc) },
		r.enableSockets,
	} {
		if err := fn(in); err != nil {
			return r.report, err
		}
	}
	r.finish(in.Name, "restart Klipper so it joins group lmnt and loads the extras: sudo systemctl restart "+unitOrKlipper(in))
	return r.report, nil
}

func unitOrKlipper(in Instance) string {
	if in.Unit != "" {
		return strings.TrimSuffix(path.Base(in.Unit), ".service")
	}
	return "klipper"
}

// finish activates unit and config changes and says what is left to do.
func (r *runner) finish(instance, klipperAdvice string) {
	if !r.report.Changed() {
		fmt.Fprintln(r.out, "lmnt setup: nothing to change")
		return
	}
	if r.opts.DryRun {
		fmt.Fprintln(r.out, "lmnt setup: dry run; run again without --dry-run to apply")
		return
	}
	switch {
	case !r.live():
		r.step("activate", Skipped, "not the running system (--root); systemd and lmntd not reloaded", "")
	case r.opts.Activator == nil:
		r.step("activate", Skipped, "run: "+r.activateAdvice(), "")
	default:
		if err := r.opts.Activator.Activate(r.ctx, r.t.name); err != nil {
			r.step("activate", Warning, "reloading systemd or lmntd failed: "+err.Error()+"; run: "+r.activateAdvice(), "")
		} else {
			detail := "systemd reloaded; lmntd restarts with the new settings once no job is running"
			if r.removing && r.t.name != "" {
				detail = "systemd reloaded; " + r.t.unit() + " is stopped and its sockets disabled"
			}
			r.step("activate", Changed, detail, "")
		}
	}
	if r.report.RestartKlipper {
		fmt.Fprintln(r.out, "lmnt setup: next: "+klipperAdvice)
	}
}

// activateAdvice is what to run when setup could not activate its changes.
func (r *runner) activateAdvice() string {
	if r.t.name == "" {
		return "sudo systemctl daemon-reload && sudo lmnt restart --when-idle"
	}
	return "sudo systemctl daemon-reload && sudo systemctl start " + strings.Join(r.t.socketUnits(), " ") +
		" && sudo lmnt --instance " + r.t.name + " restart --when-idle"
}

// resolveInstance picks the Klipper instance to wire.
func (r *runner) resolveInstance() (Instance, error) {
	o := r.opts
	var found []Instance
	var notes []string
	var err error
	if o.ConfigFile == "" || o.KlipperUser == "" || o.ExtrasDir == "" {
		found, notes, err = Detect(r.root)
		if err != nil && o.ConfigFile == "" {
			return Instance{}, err
		}
	}
	for _, n := range notes {
		fmt.Fprintln(r.out, "lmnt setup: note: "+n)
	}
	var in Instance
	switch {
	case o.ConfigFile != "":
		in = Instance{Name: "custom", ConfigFile: path.Clean(o.ConfigFile)}
		for _, f := range found {
			if f.ConfigFile == in.ConfigFile {
				in = f
			}
		}
	case o.Instance != "":
		var names []string
		for _, f := range found {
			names = append(names, f.Name)
			if f.Name == o.Instance || strings.HasSuffix(f.Name, "-"+o.Instance) || path.Base(f.DataDir) == o.Instance ||
				path.Base(f.DataDir) == o.Instance+"_data" {
				in = f
			}
		}
		if in.ConfigFile == "" {
			return Instance{}, fmt.Errorf("%w: %q (found: %s)", ErrNoInstance, o.Instance, strings.Join(names, ", "))
		}
	case len(found) == 1:
		in = found[0]
	default:
		var list []string
		for _, f := range found {
			list = append(list, "  "+f.String())
		}
		return Instance{}, fmt.Errorf("%w:\n%s", ErrAmbiguous, strings.Join(list, "\n"))
	}
	if !path.IsAbs(in.ConfigFile) {
		return Instance{}, fmt.Errorf("%w: config file %q is not an absolute path", ErrUnsupportedPath, in.ConfigFile)
	}
	in.fill(r.root)
	users, err := readPasswd(r.root)
	if err != nil {
		return Instance{}, err
	}
	if o.KlipperUser != "" {
		in.User = o.KlipperUser
	}
	if in.User == "" {
		return Instance{}, fmt.Errorf("%w: no unit names Klipper's user for %s; give it with --klipper-user", ErrNoInstance, in.ConfigFile)
	}
	acct, ok := users[in.User]
	if !ok {
		return Instance{}, fmt.Errorf("%w: Klipper user %q is not in /etc/passwd", ErrNoInstance, in.User)
	}
	in.UID, in.GID, in.Home = acct.UID, acct.GID, acct.Home
	if o.ExtrasDir != "" {
		in.ExtrasDir = path.Clean(o.ExtrasDir)
	}
	if in.ExtrasDir == "" {
		in.ExtrasDir = findExtras(r.root, in.Home)
	}
	if in.ExtrasDir == "" {
		return Instance{}, fmt.Errorf("%w: Klipper's klippy/extras not found for %s; give it with --extras", ErrNoInstance, in.Name)
	}
	if st, err := os.Stat(r.at(in.ExtrasDir)); err != nil || !st.IsDir() {
		return Instance{}, fmt.Errorf("%w: %s is not a directory (Klipper's klippy/extras)", ErrNoInstance, in.ExtrasDir)
	}
	if _, err := os.Stat(r.at(in.ConfigFile)); err != nil {
		return Instance{}, fmt.Errorf("%w: %s: %v", ErrNoInstance, in.ConfigFile, err)
	}
	return in, nil
}

// linkExtras links each shipped extra into klippy/extras. A file in the way
// (the old plugin's copy) is moved aside, and restored by Remove.
func (r *runner) linkExtras(in Instance) error {
	for _, name := range Extras {
		target := path.Join(r.opts.ShareDir, name)
		if _, err := os.Stat(r.at(target)); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotInstalled, target, err)
		}
		link := path.Join(in.ExtrasDir, name)
		cur, err := os.Readlink(r.at(link))
		if err == nil && cur == target {
			r.step("extras", Unchanged, link+" -> "+target, "")
			continue
		}
		rec := linkRecord{Path: link, Target: target}
		detail := "linked " + link + " -> " + target
		if _, err := os.Lstat(r.at(link)); err == nil {
			rec.MovedAside = fmt.Sprintf(backupPattern, link, r.opts.Now().UTC().Format("20060102-150405"))
			detail += " (the file there moved to " + path.Base(rec.MovedAside) + ")"
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("setup: %w", err)
		}
		if !r.opts.DryRun {
			if rec.MovedAside != "" {
				if err := os.Rename(r.at(link), r.at(rec.MovedAside)); err != nil {
					return fmt.Errorf("setup: moving the old %s aside: %w", link, err)
				}
			}
			if err := os.Symlink(target, r.at(link)); err != nil {
				return fmt.Errorf("setup: linking %s: %w", link, err)
			}
			// The link lives in the owner's Klipper checkout: make it theirs.
			if err := os.Lchown(r.at(link), in.UID, in.GID); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			r.m.Links = append(r.m.Links, rec)
			if err := r.saveManifest(); err != nil {
				return err
			}
		}
		r.report.RestartKlipper = true
		r.step("extras", Changed, detail, "")
	}
	return nil
}

// joinGroup adds Klipper's user to group lmnt.
func (r *runner) joinGroup(in Instance) error {
	members, err := groupMembers(r.root, SocketGroup)
	if err != nil {
		return err
	}
	if slices.Contains(members, in.User) {
		r.step("group", Unchanged, in.User+" is in group "+SocketGroup, "")
		return nil
	}
	if !r.opts.DryRun {
		if _, err := setGroupMember(r.root, SocketGroup, in.User, true); err != nil {
			return err
		}
		r.m.GroupAdded = in.User
		if err := r.saveManifest(); err != nil {
			return err
		}
	}
	r.report.RestartKlipper = true
	r.step("group", Changed, "added "+in.User+" to group "+SocketGroup+" (Klipper gets it when it restarts)", "")
	return nil
}

// grantConfigAccess gives lmntd's user read access to the config directory.
func (r *runner) grantConfigAccess(in Instance, uid int) error {
	targets, err := aclTargets(r.root, in.ConfigDir)
	if err != nil {
		return err
	}
	granted := 0
	for _, t := range targets {
		grant, kind := grantACL, "ACL"
		if t.dflt {
			grant, kind = grantDefaultACL, "default ACL"
		}
		g, err := grant(r.ctx, r.at(t.host), t.host, uid, t.perms, r.opts.DryRun)
		if err != nil {
			return err
		}
		if g == nil {
			continue
		}
		granted++
		r.step("access", Changed, fmt.Sprintf("%s user:%s:%s on %s", kind, ServiceUser, g.Perms, t.host), "")
		if !r.opts.DryRun {
			r.m.ACLs = append(r.m.ACLs, *g)
			if err := r.saveManifest(); err != nil {
				return err
			}
		}
	}
	if granted == 0 {
		r.step("access", Unchanged, ServiceUser+" can read "+in.ConfigDir, "")
	}
	return nil
}

// unitPath checks that p can go into a unit file setting as one word.
func unitPath(p string) (string, error) {
	if strings.ContainsAny(p, " \t\n\"'\\") {
		return "", fmt.Errorf("%w: %q contains white space, a quote or a backslash, which lmntd.service cannot bind", ErrUnsupportedPath, p)
	}
	return strings.ReplaceAll(p, "%", "%%"), nil
}

// writeDropIn binds the config directory read-only into lmntd's sandbox.
func (r *runner) writeDropIn(in Instance) error {
	dir, err := unitPath(in.ConfigDir)
	if err != nil {
		return err
	}
	stubs, err := stubBindLine(in)
	if err != nil {
		return err
	}
	content := fmt.Sprintf(`# Written by `+"`lmnt setup`"+` for Klipper instance %s; `+"`lmnt setup --remove`"+` deletes it.
# lmntd reads Klipper's config here, read-only. The rest of the home
# directories stays hidden (ProtectHome=tmpfs in lmntd.service). The "-"
# keeps lmntd starting if the directory moves or goes: it then reports the
# missing config (lmnt doctor) instead of failing with 226/NAMESPACE.
[Service]
BindReadOnlyPaths=-%s
%s`, in.Name, dir, stubs)
	return r.writeOwnFile("unit", r.t.dropIn, content, func() { r.m.DropIn = r.t.dropIn })
}

// writeOwnFile writes a root-owned file setup creates and owns.
func (r *runner) writeOwnFile(step, host, content string, record func()) error {
	old, err := os.ReadFile(r.at(host))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("setup: %w", err)
	}
	if err == nil && string(old) == content {
		r.step(step, Unchanged, host, "")
		return nil
	}
	diff := unifiedDiff(host, string(old), content)
	if !r.opts.DryRun {
		if err := os.MkdirAll(filepath.Dir(r.at(host)), 0o755); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		if err := writeFileAtomic(r.at(host), []byte(content), 0o644, -1, -1, nil); err != nil {
			return err
		}
		record()
		if err := r.saveManifest(); err != nil {
			return err
		}
	}
	r.step(step, Changed, "wrote "+host, diff)
	return nil
}

// patchPrinterCfg adds what lmntd needs to printer.cfg.
func (r *runner) patchPrinterCfg(in Instance) error {
	file := r.at(in.ConfigFile)
	plan, err := planPrinterCfg(file, r.t.bridgeSocket)
	if err != nil {
		return err
	}
	if len(plan.sections) == 0 {
		r.step("printer.cfg", Unchanged, in.ConfigFile+" has [encrypted_file_bridge], [secure_print] and the SDCARD_PRINT_FILE macro", "")
	} else {
		old, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		patched := insertBlock(string(old), plan.sections)
		diff := unifiedDiff(in.ConfigFile, string(old), patched)
		var names []string
		for _, s := range plan.sections {
			names = append(names, strings.SplitN(s, "\n", 2)[0])
		}
		detail := "added " + strings.Join(names, ", ") + " to " + in.ConfigFile
		if !r.opts.DryRun {
			backup := fmt.Sprintf(backupPattern, in.ConfigFile, r.opts.Now().UTC().Format("20060102-150405"))
			if err := writeFileLike(r.at(backup), old, file); err != nil {
				return err
			}
			r.m.Backups = append(r.m.Backups, backup)
			if err := writeFileLike(file, []byte(patched), file); err != nil {
				return err
			}
			r.m.PrinterCfg = in.ConfigFile
			if err := r.saveManifest(); err != nil {
				return err
			}
			detail += " (backup " + path.Base(backup) + ")"
		}
		r.report.RestartKlipper = true
		r.step("printer.cfg", Changed, detail, diff)
	}
	for _, n := range plan.notes {
		r.step("printer.cfg", Warning, n, "")
	}
	return nil
}

// addToASVC lets Moonraker manage lmntd (restart buttons, update manager).
func (r *runner) addToASVC(in Instance) error {
	asvc := in.MoonrakerASVC()
	if asvc == "" {
		r.step("moonraker", Skipped, "no printer_data directory, so no moonraker.asvc", "")
		return nil
	}
	old, err := os.ReadFile(r.at(asvc))
	if errors.Is(err, fs.ErrNotExist) {
		// Moonraker writes its defaults when the file is missing; creating it
		// with only lmntd would hide every other service from it.
		r.step("moonraker", Skipped, asvc+" does not exist (Moonraker not installed, or never started)", "")
		return nil
	}
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, l := range strings.Split(string(old), "\n") {
		if strings.TrimSpace(l) == r.t.asvcService {
			r.step("moonraker", Unchanged, r.t.asvcService+" is in "+asvc, "")
			return nil
		}
	}
	text := string(old)
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	text += r.t.asvcService + "\n"
	diff := unifiedDiff(asvc, string(old), text)
	if !r.opts.DryRun {
		if err := writeFileLike(r.at(asvc), []byte(text), r.at(asvc)); err != nil {
			return err
		}
		r.m.ASVC = asvc
		if err := r.saveManifest(); err != nil {
			return err
		}
	}
	r.step("moonraker", Changed, "added "+r.t.asvcService+" to "+asvc+" (Moonraker reads it when it restarts)", diff)
	return nil
}

// setDaemonConfig tells lmntd who Klipper is and where its config lives, in
// a drop-in of its own: /etc/lmntd/lmntd.toml is a dpkg conffile and stays
// the owner's, so a package upgrade that ships a changed lmntd.toml never
// stops at dpkg's conffile prompt (unattended upgrades would fail there).
func (r *runner) setDaemonConfig(in Instance) error {
	// The stub folder's parent is Klipper's gcodes directory.
	gcodes := ""
	if folder := stubFolder(in); folder != "" {
		gcodes = "gcodes_dir = " + strconv.Quote(path.Dir(folder)) + "\n"
	}
	klipper := fmt.Sprintf("[klipper]\nuser = %s\nconfig_file = %s\n%s", strconv.Quote(in.User), strconv.Quote(in.ConfigFile), gcodes)
	content := fmt.Sprintf(`# Written by `+"`lmnt setup`"+` for Klipper instance %s; `+"`lmnt setup --remove`"+` deletes it.
# lmntd reads this after %s, so these settings win over the same keys
# there; put your own settings in %s or in another drop-in here.
%s`, in.Name, ConfigFile, ConfigFile, klipper)
	if r.t.name != "" {
		// A farm instance's config file is setup's: lmntd@NAME reads it
		// and then its .d drop-ins, where the owner's own settings go.
		content = fmt.Sprintf(`# Written by `+"`lmnt setup --instance %s`"+` for Klipper instance %s; `+"`lmnt setup --instance %s --remove`"+` deletes it.
# Put your own settings for lmntd@%s in a drop-in, %s/*.toml:
# setup rewrites this file.
instance = %s

%sbridge_socket = %s
`, r.t.name, in.Name, r.t.name, r.t.name, config.DropInDir(r.t.configFile), strconv.Quote(r.t.name), klipper, strconv.Quote(r.t.bridgeSocket))
	}
	return r.writeOwnFile("config", r.t.configFile, content, func() { r.m.ConfigDropIn = r.t.configFile })
}

// legacyFiles are the old plugin's files an import reads.
var legacyFiles = []string{identity.LegacyEncFile, identity.LegacyHexFile, identity.LegacyHexClearFile,
	identity.LegacyKeypairFile, identity.LegacyTokenFile}

// importLegacy moves the old plugin's pairing to lmntd when asked to. The
// key is read here first, so a file that does not decrypt on this host is
// reported before lmntd is involved, and lmntd's answer can be checked.
func (r *runner) importLegacy(in Instance, svc account) error {
	dir := in.LegacyDir()
	present := false
	for _, rel := range legacyFiles {
		if _, err := os.Stat(filepath.Join(r.at(dir), filepath.FromSlash(rel))); err == nil {
			present = true
		}
	}
	switch {
	case !present && r.opts.ImportLegacy:
		r.step("legacy", Warning, "--import-legacy: the old plugin's key and token are not in "+dir, "")
		return nil
	case !present:
		return nil
	case !r.opts.ImportLegacy:
		r.step("legacy", Skipped, "the old plugin's key is in "+dir+"; run again with --import-legacy to keep this printer's pairing", "")
		return nil
	}
	if r.t.name != "" {
		// The import goes through the default lmntd's API and staging
		// directory; a farm instance pairs afresh (lmnt --instance NAME pair).
		return fmt.Errorf("setup: --import-legacy moves the old plugin's pairing to the default lmntd only, not to %s", r.t.unit())
	}
	imp, err := identity.ImportLegacyKey(identity.LegacyOptions{Dir: r.at(dir), HostRoot: r.root, Logger: r.log})
	if err != nil {
		return fmt.Errorf("setup: importing the old plugin's key: %w", err)
	}
	keyID := imp.Key.KeyID()
	imp.Key.Zero()
	what := "key " + keyID
	if token, err := identity.ImportLegacyToken(r.at(dir)); err == nil {
		what += " and " + token.String()
	} else if !errors.Is(err, fs.ErrNotExist) {
		r.step("legacy", Warning, "the old plugin's token is unusable ("+err.Error()+"): pair again with `lmnt pair` after the import", "")
	}
	if r.opts.DryRun {
		r.step("legacy", Changed, "would hand "+what+" to lmntd", "")
		return nil
	}
	if r.opts.Importer == nil {
		return ErrNoImporter
	}
	staged, err := r.stageLegacy(dir, svc)
	if err != nil {
		return err
	}
	defer wipeTree(staged)
	res, err := r.opts.Importer.ImportLegacy(r.ctx, strings.TrimPrefix(staged, strings.TrimSuffix(r.root, "/")))
	if err != nil {
		return fmt.Errorf("setup: lmntd did not import the old plugin's key: %w", err)
	}
	if res.KeyID != keyID {
		return fmt.Errorf("setup: lmntd imported key %s, but the old plugin's key is %s", res.KeyID, keyID)
	}
	detail := "lmntd sealed and stored the old plugin's key " + keyID
	if res.TokenImported {
		detail += " and its token (printer " + res.PrinterID + ")"
	}
	r.step("legacy", Changed, detail, "")
	return nil
}

// stageLegacy copies the old plugin's files into a fresh private directory
// under StagingDir, owned by lmntd's user.
func (r *runner) stageLegacy(dir string, svc account) (string, error) {
	base := r.at(r.opts.StagingDir)
	if err := os.MkdirAll(base, 0o750); err != nil {
		return "", fmt.Errorf("setup: %w", err)
	}
	staged, err := os.MkdirTemp(base, "legacy-import.")
	if err != nil {
		return "", fmt.Errorf("setup: %w", err)
	}
	fail := func(err error) (string, error) {
		wipeTree(staged)
		return "", fmt.Errorf("setup: staging the old plugin's files: %w", err)
	}
	for _, rel := range legacyFiles {
		data, err := os.ReadFile(filepath.Join(r.at(dir), filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fail(err)
		}
		dst := filepath.Join(staged, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			clear(data)
			return fail(err)
		}
		err = writeFileAtomic(dst, data, 0o600, svc.UID, svc.GID, nil)
		clear(data)
		if err != nil {
			return fail(err)
		}
	}
	err = filepath.WalkDir(staged, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chown(p, svc.UID, svc.GID)
	})
	if err != nil {
		return fail(err)
	}
	return staged, nil
}

// wipeTree overwrites the regular files under dir with zeros, then removes it.
func wipeTree(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				if st, err := f.Stat(); err == nil {
					f.Write(make([]byte, st.Size()))
					f.Sync()
				}
				f.Close()
			}
		}
		return nil
	})
	os.RemoveAll(dir)
}
