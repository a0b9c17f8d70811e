package setup

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

var fixedNow = func() time.Time { return time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC) }

func run(t *testing.T, h *host, opts Options) (*Report, string) {
	t.Helper()
	var out bytes.Buffer
	opts.Root, opts.Out, opts.Now = h.root, &out, fixedNow
	rep, err := Run(context.Background(), opts)
	t.Logf("lmnt setup output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep, out.String()
}

func remove(t *testing.T, h *host, opts Options) (*Report, string) {
	t.Helper()
	var out bytes.Buffer
	opts.Root, opts.Out, opts.Now = h.root, &out, fixedNow
	rep, err := Remove(context.Background(), opts)
	t.Logf("lmnt setup --remove output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Remove: %v", err)
	}
	return rep, out.String()
}

func TestDetectMainsailOS(t *testing.T) {
	h := mainsailOS(t)
	found, _, err := Detect(h.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 {
		t.Fatalf("found %d instances, want 1 (klipper-mcu.service is not Klipper): %+v", len(found), found)
	}
	want := Instance{Name: "klipper", Unit: "/etc/systemd/system/klipper.service", User: "pi", UID: uidPi, GID: uidPi, Home: "/home/pi",
		ConfigFile: "/home/pi/printer_data/config/printer.cfg", ConfigDir: "/home/pi/printer_data/config",
		DataDir: "/home/pi/printer_data", ExtrasDir: "/home/pi/klipper/klippy/extras"}
	if found[0] != want {
		t.Errorf("instance\n got %+v\nwant %+v", found[0], want)
	}
	if got := found[0].MoonrakerASVC(); got != "/home/pi/printer_data/moonraker.asvc" {
		t.Errorf("MoonrakerASVC = %s", got)
	}
}

func TestDetectKIAUHTwoInstancesAndLegacyLayout(t *testing.T) {
	h := kiauhTwo(t)
	// A third, old-layout Klipper (pre-printer_data KIAUH) in a unit that
	// names everything on the command line, with a drop-in changing the user.
	h.mkdir("home/pi", 0o700, uidPi, uidPi)
	h.write("home/pi/klipper_config/printer.cfg", 0o644, uidPi, uidPi, samplePrinterCfg)
	h.mkdir("opt/klipper/klippy/extras", 0o755, 0, 0)
	h.write("lib/systemd/system/klipper-old.service", 0o644, 0, 0, `[Service]
User=root
ExecStart=/usr/bin/python3 /opt/klipper/klippy/klippy.py \
    -l /tmp/klippy.log ~/klipper_config/printer.cfg
`)
	h.write("etc/systemd/system/klipper-old.service.d/user.conf", 0o644, 0, 0, "[Service]\nUser=pi\n")
	found, notes, err := Detect(h.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range found {
		names = append(names, f.Name+"="+f.User+":"+f.ConfigFile+":"+f.ExtrasDir+":"+f.DataDir)
	}
	want := []string{
		"klipper-printer_1=biqu:/home/biqu/printer_1_data/config/printer.cfg:/home/biqu/klipper/klippy/extras:/home/biqu/printer_1_data",
		"klipper-printer_2=biqu:/home/biqu/printer_2_data/config/printer.cfg:/home/biqu/klipper/klippy/extras:/home/biqu/printer_2_data",
		"klipper-old=pi:/home/pi/klipper_config/printer.cfg:/opt/klipper/klippy/extras:",
	}
	if !slices.Equal(names, want) {
		t.Errorf("instances\n got %q\nwant %q", names, want)
	}
	if len(notes) != 0 {
		t.Errorf("notes: %q", notes)
	}
}

func TestDetectWithoutUnits(t *testing.T) {
	h := newHost(t)
	h.addPrinterData("biqu", uidBiqu, "printer_data")
	found, _, err := Detect(h.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].User != "biqu" || found[0].ExtrasDir != "/home/biqu/klipper/klippy/extras" {
		t.Fatalf("found %+v", found)
	}
	empty := newHost(t)
	if _, _, err := Detect(empty.root); !errors.Is(err, ErrNoKlipper) {
		t.Fatalf("Detect on a host without Klipper: %v, want ErrNoKlipper", err)
	}
}

// TestRunAndRemoveMainsailOS is the whole cycle on a MainsailOS layout with
// a real 0700 home: setup, a second idempotent run, then --remove back to
// the exact original tree (but the owner's backup).
func TestRunAndRemoveMainsailOS(t *testing.T) {
	h := mainsailOS(t)
	cfg := "home/pi/printer_data/config/printer.cfg"
	if ok, _ := h.canRead(uidLmntd, cfg); ok {
		t.Fatal("fixture: lmntd can read printer.cfg before setup; the home directory must be 0700")
	}
	before := h.snapshot()

	rep, out := run(t, h, Options{})
	if !rep.RestartKlipper || !strings.Contains(out, "sudo systemctl restart klipper") {
		t.Error("the report does not tell the owner to restart Klipper")
	}

	// Extras: links into klippy/extras, owned by pi.
	for _, e := range Extras {
		link := h.path("home/pi/klipper/klippy/extras/" + e)
		target, err := os.Readlink(link)
		if err != nil || target != "/usr/share/lmntd/klipper/"+e {
			t.Errorf("%s -> %q (%v)", e, target, err)
		}
		if st := lstatOwner(t, link); st != uidPi {
			t.Errorf("%s is owned by uid %d, want pi", e, st)
		}
	}
	// Group lmnt, in both databases.
	if !strings.Contains(h.read("etc/group"), fmt.Sprintf("lmnt:x:%d:lmntd,pi\n", gidLmnt)) {
		t.Errorf("/etc/group:\n%s", h.read("etc/group"))
	}
	if !strings.Contains(h.read("etc/gshadow"), "lmnt:!::lmntd,pi\n") {
		t.Errorf("/etc/gshadow:\n%s", h.read("etc/gshadow"))
	}
	if st, _ := os.Stat(h.path("etc/gshadow")); st.Mode().Perm() != 0o640 {
		t.Errorf("/etc/gshadow mode %v, want 0640 kept", st.Mode().Perm())
	}
	// The kernel now lets lmntd read the config, through the ACLs, and
	// nothing else in the home directory.
	if ok, msg := h.canRead(uidLmntd, cfg); !ok {
		t.Errorf("lmntd cannot read printer.cfg after setup: %s", msg)
	}
	h.write("home/pi/secret.txt", 0o600, uidPi, uidPi, "owner's file\n")
	if ok, _ := h.canRead(uidLmntd, "home/pi/secret.txt"); ok {
		t.Error("lmntd can read a private file of the owner")
	}
	os.Remove(h.path("home/pi/secret.txt"))
	acl := getfacl(t, h.path("home/pi"))
	if !strings.Contains(acl, fmt.Sprintf("user:%d:--x", uidLmntd)) || !strings.Contains(acl, "group::---") || !strings.Contains(acl, "other::---") {
		t.Errorf("ACL of the home directory:\n%s", acl)
	}
	// The unit drop-in.
	dropIn := h.read(DropInFile)
	if !strings.Contains(dropIn, "[Service]\nBindReadOnlyPaths=-/home/pi/printer_data/config\n") {
		t.Errorf("drop-in:\n%s", dropIn)
	}
	// printer.cfg: the block before SAVE_CONFIG, the whole tree now passes
	// lmntd's own check, and a byte-identical backup exists.
	text := h.read(cfg)
	if i, j := strings.Index(text, blockBegin), strings.Index(text, "#*# <----"); i < 0 || j < i {
		t.Errorf("the lmntd block is not before SAVE_CONFIG:\n%s", text)
	}
	if !strings.HasSuffix(text, "#*# z_offset = 1.985\n") {
		t.Error("the SAVE_CONFIG block is not kept at the end")
	}
	report := klippercfg.Inspect(h.path(cfg), klippercfg.CheckOptions{BridgeSocket: klippercfg.DefaultBridgeSocket})
	if !report.OK() {
		t.Errorf("printer.cfg after setup does not pass klippercfg: %v", report.Findings)
	}
	backup := "home/pi/printer_data/config/printer.cfg.lmntd-20261127-130000.bak"
	if h.read(backup) != samplePrinterCfg {
		t.Error("the backup is not the original printer.cfg")
	}
	if lstatOwner(t, h.path(cfg)) != uidPi {
		t.Error("printer.cfg is no longer pi's")
	}
	// Moonraker, and lmntd's settings in the drop-in beside the owner's
	// lmntd.toml (a conffile), which stays byte for byte as it was.
	if !strings.HasSuffix(h.read("home/pi/printer_data/moonraker.asvc"), "crowsnest\noctoeverywhere\nratos-configurator\nlmntd\n") {
		t.Errorf("moonraker.asvc:\n%s", h.read("home/pi/printer_data/moonraker.asvc"))
	}
	toml := h.read(ConfigDropIn)
	for _, l := range []string{"\n[klipper]\nuser = \"pi\"\n", "\nconfig_file = \"/home/pi/printer_data/config/printer.cfg\"\n"} {
		if !strings.Contains(toml, l) {
			t.Errorf("%s lacks %q:\n%s", ConfigDropIn, l, toml)
		}
	}
	if h.read(ConfigFile) != shippedConfig(t) {
		t.Errorf("setup changed the conffile %s", ConfigFile)
	}

	// A second run changes nothing.
	afterFirst := h.snapshot()
	rep2, out2 := run(t, h, Options{})
	if rep2.Changed() || !strings.Contains(out2, "nothing to change") {
		t.Errorf("second run changed something:\n%s", out2)
	}
	if d := diffSnapshots(afterFirst, h.snapshot()); len(d) > 0 {
		t.Errorf("second run touched files: %q", d)
	}

	// --remove --dry-run lists the undo steps and touches nothing.
	_, dryOut := remove(t, h, Options{DryRun: true})
	if d := diffSnapshots(afterFirst, h.snapshot()); len(d) > 0 {
		t.Errorf("--remove --dry-run touched files: %q", d)
	}
	if !strings.Contains(dryOut, "[would]  group           removed pi from group lmnt") || !strings.Contains(dryOut, "-[encrypted_file_bridge]") {
		t.Errorf("--remove --dry-run output lacks the group step or the printer.cfg diff:\n%s", dryOut)
	}

	// --remove restores everything but the owner's backup (and the "-"
	// backups of the account files, as shadow-utils keeps them).
	remove(t, h, Options{})
	d := diffSnapshots(before, h.snapshot())
	wantDiff := []string{"added etc/.pwd.lock", "added etc/group-", "added etc/gshadow-", "added " + backup}
	if !slices.Equal(d, wantDiff) {
		t.Errorf("after --remove the tree differs from the original:\n%s", strings.Join(d, "\n"))
	}
	if ok, _ := h.canRead(uidLmntd, cfg); ok {
		t.Error("lmntd can still read printer.cfg after --remove")
	}
	// And --remove again has nothing to do.
	_, out3 := remove(t, h, Options{})
	if !strings.Contains(out3, "nothing to undo") {
		t.Errorf("second --remove: %s", out3)
	}
}

func lstatOwner(t *testing.T, p string) int {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

func TestDryRunChangesNothingAndShowsDiffs(t *testing.T) {
	h := mainsailOS(t)
	before := h.snapshot()
	rep, out := run(t, h, Options{DryRun: true})
	if d := diffSnapshots(before, h.snapshot()); len(d) > 0 {
		t.Fatalf("dry run changed files: %q", d)
	}
	if !rep.Changed() {
		t.Fatal("dry run reports nothing to do")
	}
	for _, want := range []string{
		"+" + blockBegin, "+[encrypted_file_bridge]", "+[secure_print]", "+[gcode_macro SDCARD_PRINT_FILE]",
		"+BindReadOnlyPaths=-/home/pi/printer_data/config", "+lmntd", "+user = \"pi\"",
		"[would]  group           added pi to group lmnt",
		"ACL user:lmntd:--x on /home/pi\n",
		" #*# <---------------------- SAVE_CONFIG ---------------------->",
		"dry run; run again without --dry-run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
	for _, s := range rep.Steps {
		if s.Status == Changed {
			t.Errorf("dry run step %s reports %q", s.Name, s.Status)
		}
	}
}

// TestKIAUHTwoInstances: setup refuses to guess, then wires exactly the
// chosen instance to the default lmntd.
func TestKIAUHTwoInstances(t *testing.T) {
	h := kiauhTwo(t)
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{Root: h.root, Out: &out})
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "klipper-printer_1") || !strings.Contains(err.Error(), "klipper-printer_2") {
		t.Fatalf("Run without --instance: %v", err)
	}
	if _, err := Run(context.Background(), Options{Root: h.root, Instance: "printer_3", Out: &out}); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Run --instance printer_3: %v", err)
	}
	other := h.snapshot()["home/biqu/printer_1_data/config/printer.cfg"]

	run(t, h, Options{Instance: "printer_2"})
	if h.snapshot()["home/biqu/printer_1_data/config/printer.cfg"] != other {
		t.Error("printer_1's printer.cfg changed")
	}
	if !strings.Contains(h.read("home/biqu/printer_2_data/config/printer.cfg"), blockBegin) {
		t.Error("printer_2's printer.cfg not patched")
	}
	if !strings.Contains(h.read(DropInFile), "BindReadOnlyPaths=-/home/biqu/printer_2_data/config\n") {
		t.Errorf("drop-in:\n%s", h.read(DropInFile))
	}
	if !strings.Contains(h.read(ConfigDropIn), "\nuser = \"biqu\"\n") {
		t.Error(ConfigDropIn + ": klipper.user not biqu")
	}
	if ok, msg := h.canRead(uidLmntd, "home/biqu/printer_2_data/config/mainsail.cfg"); !ok {
		t.Errorf("lmntd cannot read printer_2's config: %s", msg)
	}
	if ok, _ := h.canRead(uidLmntd, "home/biqu/printer_1_data/config/printer.cfg"); !ok {
		// Same home: printer_1's config is reachable through the home's
		// search ACL and its own 0755/0644 modes, which setup leaves alone.
		t.Log("printer_1's config not readable (fine)")
	}
	remove(t, h, Options{})
	if strings.Contains(h.read("home/biqu/printer_2_data/config/printer.cfg"), "lmntd") {
		t.Error("printer_2's printer.cfg still has the lmntd block")
	}
	run(t, h, Options{Instance: "klipper-printer_1"})
}

// TestMigrationFromTheOldPlugin: the old plugin's copies of the extras and
// its printer.cfg sections (in an included file) are respected; its key
// and token are handed to lmntd only with ImportLegacy.
func TestMigrationFromTheOldPlugin(t *testing.T) {
	h := mainsailOS(t)
	extras := "home/pi/klipper/klippy/extras/"
	h.write(extras+"encrypted_file_bridge.py", 0o644, uidPi, uidPi, "# the old plugin's bridge\n")
	if err := os.Symlink("/home/pi/lmnt_marketplace_plugin/klipper/secure_print.py", h.path(extras+"secure_print.py")); err != nil {
		t.Fatal(err)
	}
	h.write("home/pi/printer_data/config/lmnt.cfg", 0o644, uidPi, uidPi, "[encrypted_file_bridge]\n\n[secure_print]\n\n"+klippercfg.MacroSnippet+"\n")
	h.write("home/pi/printer_data/config/printer.cfg", 0o644, uidPi, uidPi, "[include lmnt.cfg]\n"+samplePrinterCfg)
	legacy := "home/pi/printer_data/lmnt_marketplace/"
	priv := "2f8bd6c1d4e4a0c7f5c1c7a9e64e6b0e7f4b3d2c1a0918273645546372819001"
	h.write(legacy+identity.LegacyHexFile, 0o600, uidPi, uidPi, priv+"\n")
	h.write(legacy+identity.LegacyTokenFile, 0o600, uidPi, uidPi,
		`{"printer_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwLTQyIn0.c2ln", "token_expires": "2026-12-24T10:00:00Z", "printer_id": "p-42", "printer_name": "Voron"}`)
	before := h.snapshot()

	_, out := run(t, h, Options{})
	if !strings.Contains(out, "run again with --import-legacy") {
		t.Error("setup does not mention the old plugin's key")
	}
	if !strings.Contains(out, "has [encrypted_file_bridge], [secure_print] and the SDCARD_PRINT_FILE macro") {
		t.Error("printer.cfg with the sections in an include was not recognised")
	}
	if h.read("home/pi/printer_data/config/printer.cfg") != "[include lmnt.cfg]\n"+samplePrinterCfg {
		t.Error("printer.cfg changed although the include has everything")
	}
	aside := extras + "encrypted_file_bridge.py.lmntd-20261127-130000.bak"
	if h.read(aside) != "# the old plugin's bridge\n" {
		t.Error("the old plugin's bridge was not moved aside")
	}

	// Without an importer there is no way to hand the key over.
	var buf bytes.Buffer
	if _, err := Run(context.Background(), Options{Root: h.root, ImportLegacy: true, Out: &buf, Now: fixedNow}); !errors.Is(err, ErrNoImporter) {
		t.Fatalf("ImportLegacy without an Importer: %v", err)
	}
	imp := &stagedImporter{t: t, root: h.root}
	_, out = run(t, h, Options{ImportLegacy: true, Importer: imp, StagingDir: "/run/lmntd"})
	raw, _ := hex.DecodeString(priv)
	want, err := identity.FromPrivate(raw)
	if err != nil {
		t.Fatal(err)
	}
	if imp.keyID != want.KeyID() {
		t.Errorf("lmntd found key %s in the staged copy, want %s", imp.keyID, want.KeyID())
	}
	if imp.token == nil || imp.token.PrinterID != "p-42" || imp.token.Token != "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwLTQyIn0.c2ln" {
		t.Errorf("lmntd found token %+v", imp.token)
	}
	if !strings.Contains(out, "lmntd sealed and stored the old plugin's key "+want.KeyID()+" and its token (printer p-42)") {
		t.Error("the import is not reported")
	}
	if strings.Contains(out, "c2ln") || strings.Contains(out, priv) {
		t.Error("the output shows the token or the key")
	}
	if entries, err := os.ReadDir(h.path("run/lmntd")); err != nil || len(entries) != 0 {
		t.Errorf("the staged copy was not removed: %v %v", entries, err)
	}
	// lmntd answering with another key is an error, not a success.
	buf.Reset()
	_, err = Run(context.Background(), Options{Root: h.root, ImportLegacy: true, Importer: &stagedImporter{t: t, root: h.root, lie: true},
		StagingDir: "/run/lmntd", Out: &buf, Now: fixedNow})
	if err == nil || !strings.Contains(err.Error(), "but the old plugin's key is") {
		t.Errorf("a mismatching key id from lmntd: %v", err)
	}
	os.RemoveAll(h.path("run"))

	remove(t, h, Options{})
	d := diffSnapshots(before, h.snapshot())
	if !slices.Equal(d, []string{"added etc/.pwd.lock", "added etc/group-", "added etc/gshadow-"}) {
		t.Errorf("after --remove:\n%s", strings.Join(d, "\n"))
	}
}

// stagedImporter does what lmntd does with the staged copy: it reads it as
// lmntd's user would (the copy must be lmntd's, private), with identity.
type stagedImporter struct {
	t     *testing.T
	root  string
	lie   bool
	keyID string
	token *identity.LegacyToken
}

func (s *stagedImporter) ImportLegacy(_ context.Context, dir string) (LegacyResult, error) {
	p := filepath.Join(s.root, dir)
	err := filepath.WalkDir(p, func(f string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, _ := os.Lstat(f)
		sys := st.Sys().(*syscall.Stat_t)
		if sys.Uid != uidLmntd || st.Mode().Perm()&0o077 != 0 {
			s.t.Errorf("staged %s: uid %d mode %v, want lmntd's and private", f, sys.Uid, st.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		return LegacyResult{}, err
	}
	imp, err := identity.ImportLegacyKey(identity.LegacyOptions{Dir: p, HostRoot: s.root})
	if err != nil {
		return LegacyResult{}, err
	}
	defer imp.Key.Zero()
	s.keyID = imp.Key.KeyID()
	if s.token, err = identity.ImportLegacyToken(p); err != nil {
		return LegacyResult{}, err
	}
	id := s.keyID
	if s.lie {
		id = strings.Repeat("0", 64)
	}
	return LegacyResult{KeyID: id, TokenImported: true, PrinterID: s.token.PrinterID}, nil
}

func TestForeignMacroIsReportedNotRewritten(t *testing.T) {
	h := mainsailOS(t)
	cfg := "home/pi/printer_data/config/printer.cfg"
	own := "[gcode_macro SDCARD_PRINT_FILE]\nrename_existing: BASE_SDCARD_PRINT_FILE\ngcode:\n    M117 mine\n\n"
	h.write(cfg, 0o644, uidPi, uidPi, own+samplePrinterCfg)
	rep, _ := run(t, h, Options{})
	text := h.read(cfg)
	if !strings.HasPrefix(text, own) || strings.Count(text, "[gcode_macro SDCARD_PRINT_FILE]") != 1 {
		t.Errorf("the owner's macro was touched or duplicated:\n%s", text)
	}
	warned := false
	for _, s := range rep.Steps {
		if s.Name == "printer.cfg" && s.Status == Warning && strings.Contains(s.Detail, "SDCARD_PRINT_FILE") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning about the foreign macro: %+v", rep.Steps)
	}
}

func TestCustomPathsAndErrors(t *testing.T) {
	h := newHost(t)
	h.mkdir("srv/printer", 0o750, uidPi, uidPi)
	h.write("srv/printer/cfg/printer.cfg", 0o600, uidPi, uidPi, samplePrinterCfg)
	h.write("srv/printer/cfg/mainsail.cfg", 0o600, uidPi, uidPi, mainsailCfg)
	h.mkdir("opt/kalico/klippy/extras", 0o755, 0, 0)
	opts := Options{ConfigFile: "/srv/printer/cfg/printer.cfg", ExtrasDir: "/opt/kalico/klippy/extras"}
	var buf bytes.Buffer
	o := opts
	o.Root, o.Out = h.root, &buf
	if _, err := Run(context.Background(), o); !errors.Is(err, ErrNoInstance) || !strings.Contains(err.Error(), "--klipper-user") {
		t.Fatalf("custom config without a user: %v", err)
	}
	opts.KlipperUser = "pi"
	run(t, h, opts)
	for _, f := range []string{"srv/printer/cfg/printer.cfg", "srv/printer/cfg/mainsail.cfg"} {
		if ok, msg := h.canRead(uidLmntd, f); !ok {
			t.Errorf("lmntd cannot read %s (0600 files in a 0750 tree): %s", f, msg)
		}
	}
	// Klipper's SAVE_CONFIG writes a new file (Python's open: mode 0666
	// under the owner's umask) and renames it over printer.cfg: the default
	// ACL keeps it readable by lmntd.
	syscall.Umask(0o077)
	err := os.WriteFile(h.path("srv/printer/cfg/printer-saved.cfg"), []byte("[printer]\n"), 0o666)
	syscall.Umask(0o022)
	if err != nil {
		t.Fatal(err)
	}
	if ok, msg := h.canRead(uidLmntd, "srv/printer/cfg/printer-saved.cfg"); !ok {
		t.Errorf("lmntd cannot read a file written after setup: %s", msg)
	}
	if st, err := os.Stat(h.path("srv/printer/cfg/printer-saved.cfg")); err != nil || st.Mode().Perm()&0o077 != 0o040 {
		// group bits = the ACL mask (lmntd's r--); others nothing.
		t.Errorf("a file written after setup has mode %v (%v), want rw-r----- with the ACL", st.Mode().Perm(), err)
	}
	// The lmnt group must exist: it is the package's.
	g := newHost(t)
	g.write("etc/group", 0o644, 0, 0, "root:x:0:\n")
	g.addPrinterData("pi", uidPi, "printer_data")
	buf.Reset()
	if _, err := Run(context.Background(), Options{Root: g.root, Out: &buf}); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("Run without group lmnt: %v", err)
	}
	if _, err := unitPath("/home/pi/my printer/config"); !errors.Is(err, ErrUnsupportedPath) {
		t.Errorf("a path with a space: %v", err)
	}
	if p, _ := unitPath("/home/pi/100%/config"); p != "/home/pi/100%%/config" {
		t.Errorf("unitPath escapes %% as %q", p)
	}
}

func getfacl(t *testing.T, p string) string {
	t.Helper()
	out, err := runTool(context.Background(), "getfacl", "-c", "-p", "-n", "-E", "--", p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestACLRespectsAnExistingMask: granting must not widen what an existing
// mask held back from the owning group, and removal restores the mask.
func TestACLRespectsAnExistingMask(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := runTool(context.Background(), "setfacl", "-m", "g::rwx,u:64999:r--,m::r--", dir); err != nil {
		t.Fatal(err)
	}
	before := getfacl(t, dir)
	g, err := grantACL(context.Background(), dir, "/d", uidLmntd, "--x", false)
	if err != nil || g == nil {
		t.Fatalf("grantACL: %v %v", g, err)
	}
	during := getfacl(t, dir)
	if !strings.Contains(during, "mask::r-x") || !strings.Contains(during, fmt.Sprintf("user:%d:--x", uidLmntd)) {
		t.Errorf("ACL after grant (want mask r-x: the old r-- plus x):\n%s", during)
	}
	if err := revokeACL(context.Background(), dir, *g); err != nil {
		t.Fatal(err)
	}
	if after := getfacl(t, dir); after != before {
		t.Errorf("ACL after revoke\n%s\nwant\n%s", after, before)
	}
}

// TestKIAUHFarm: a KIAUH host with two Klipper instances. printer_1 goes to
// the default lmntd; printer_2 then gets its own lmntd@printer_2 (config,
// drop-in, socket_path, enabled sockets, manifest). Removing printer_2
// leaves printer_1 exactly as it was; removing the default instance first
// keeps what printer_2 still needs (extras, group, home ACL), and removing
// both leaves the host as it was found.
// TestSetupWiresEveryInstance: lmnt setup without --instance on a farm host
// wires every Klipper instance, each a printer of its own; a second run
// changes nothing.
func TestSetupWiresEveryInstance(t *testing.T) {
	h := kiauhTwo(t)
	var out bytes.Buffer
	reps, err := RunEvery(context.Background(), Options{Root: h.root, Out: &out, Now: fixedNow})
	t.Logf("lmnt setup output:\n%s", out.String())
	if err != nil {
		t.Fatalf("RunEvery: %v", err)
	}
	if len(reps) != 2 || reps[0].LmntdInstance != "" || reps[1].LmntdInstance != "printer_2" {
		t.Fatalf("wired %d instances (%+v), want printer_1 on the default lmntd and printer_2 on lmntd@printer_2", len(reps), reps)
	}
	for _, p := range []string{"etc/lmntd/instances/printer_2.toml", "etc/systemd/system/lmntd@printer_2.service.d/klipper.conf"} {
		if _, err := os.Stat(h.path(p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	wired := h.snapshot()
	if _, err := RunEvery(context.Background(), Options{Root: h.root, Out: &out, Now: fixedNow}); err != nil {
		t.Fatalf("second RunEvery: %v", err)
	}
	assertSameTree(t, wired, h.snapshot())
}

func TestKIAUHFarm(t *testing.T) {
	h := kiauhTwo(t)
	pristine := h.snapshot()
	if rep, _ := run(t, h, Options{Instance: "printer_1"}); rep.LmntdInstance != "" {
		t.Fatalf("the first instance went to lmntd@%s, want the default lmntd", rep.LmntdInstance)
	}
	single := h.snapshot()

	if rep, out := run(t, h, Options{Instance: "printer_2", DryRun: true}); rep.LmntdInstance != "printer_2" || !strings.Contains(out, "lmntd@printer_2.socket") {
		t.Errorf("a dry run for printer_2 went to %q or did not show the sockets it would enable", rep.LmntdInstance)
	}
	assertSameTree(t, single, h.snapshot())

	rep, _ := run(t, h, Options{Instance: "klipper-printer_2"})
	if rep.LmntdInstance != "printer_2" {
		t.Fatalf("the second instance went to %q, want lmntd@printer_2", rep.LmntdInstance)
	}
	cfg := h.read("etc/lmntd/instances/printer_2.toml")
	for _, want := range []string{"\ninstance = \"printer_2\"\n", "\nuser = \"biqu\"\n",
		"\nconfig_file = \"/home/biqu/printer_2_data/config/printer.cfg\"\n",
		"\ngcodes_dir = \"/home/biqu/printer_2_data/gcodes\"\n", "\nbridge_socket = \"/run/lmntd/printer_2/klipper.sock\"\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("printer_2.toml lacks %q:\n%s", want, cfg)
		}
	}
	dropIn := h.read("etc/systemd/system/lmntd@printer_2.service.d/klipper.conf")
	for _, want := range []string{"\nBindReadOnlyPaths=-/home/biqu/printer_2_data/config\n", "\nBindPaths=-/home/biqu/printer_2_data/gcodes/.lmnt\n"} {
		if !strings.Contains(dropIn, want) {
			t.Errorf("lmntd@printer_2's drop-in lacks %q:\n%s", want, dropIn)
		}
	}
	if !strings.Contains(h.read("home/biqu/printer_2_data/config/printer.cfg"), "[encrypted_file_bridge]\nsocket_path: /run/lmntd/printer_2/klipper.sock\n") {
		t.Errorf("printer_2's printer.cfg does not point the bridge at lmntd@printer_2:\n%s", h.read("home/biqu/printer_2_data/config/printer.cfg"))
	}
	for _, u := range []string{"lmntd@printer_2.socket", "lmntd-klipper@printer_2.socket"} {
		target, err := os.Readlink(h.path("etc/systemd/system/sockets.target.wants/" + u))
		if want := "/lib/systemd/system/" + strings.Replace(u, "@printer_2.", "@.", 1); err != nil || target != want {
			t.Errorf("%s enabled as %q (%v), want a link to %s", u, target, err, want)
		}
	}
	if !strings.Contains(h.read("home/biqu/printer_2_data/moonraker.asvc"), "\nlmntd@printer_2\n") {
		t.Error("moonraker.asvc of printer_2 does not list lmntd@printer_2")
	}
	if ok, msg := h.canRead(uidLmntd, "home/biqu/printer_2_data/config/printer.cfg"); !ok {
		t.Errorf("lmntd cannot read printer_2's config: %s", msg)
	}
	for _, f := range []string{DropInFile, ConfigDropIn, ManifestFile, "home/biqu/printer_1_data/config/printer.cfg"} {
		if h.snapshot()[strings.TrimPrefix(f, "/")] != single[strings.TrimPrefix(f, "/")] {
			t.Errorf("wiring printer_2 changed the default instance's %s", f)
		}
	}
	if rep, _ := run(t, h, Options{Instance: "printer_2"}); rep.Changed() || rep.LmntdInstance != "printer_2" {
		t.Errorf("a second run for printer_2 changed something or went elsewhere (%q)", rep.LmntdInstance)
	}

	// Removing printer_2 leaves the host as it was with printer_1 alone
	// (but for printer_2's printer.cfg backup, which is the owner's).
	remove(t, h, Options{Instance: "printer_2"})
	assertSameTree(t, withoutBackups(single), withoutBackups(h.snapshot()))

	// Again, then the default instance goes first: printer_2 keeps working.
	run(t, h, Options{Instance: "printer_2"})
	remove(t, h, Options{})
	for _, e := range Extras {
		if _, err := os.Readlink(h.path("home/biqu/klipper/klippy/extras/" + e)); err != nil {
			t.Errorf("removing the default instance took %s from printer_2: %v", e, err)
		}
	}
	if !strings.Contains(h.read("etc/group"), fmt.Sprintf("lmnt:x:%d:lmntd,biqu\n", gidLmnt)) {
		t.Errorf("removing the default instance took biqu out of group lmnt:\n%s", h.read("etc/group"))
	}
	if ok, msg := h.canRead(uidLmntd, "home/biqu/printer_2_data/config/printer.cfg"); !ok {
		t.Errorf("after removing the default instance lmntd cannot read printer_2's config: %s", msg)
	}
	if strings.Contains(h.read("home/biqu/printer_1_data/config/printer.cfg"), blockBegin) {
		t.Error("printer_1's printer.cfg still has the lmntd block")
	}
	remove(t, h, Options{Instance: "printer_2"})
	assertSameTree(t, withoutBackups(pristine), withoutBackups(h.snapshot()))
}

// withoutBackups leaves out the owner's backups setup made and the lock
// and backup files of /etc/group's editing (.pwd.lock, group-, gshadow-).
func withoutBackups(tree map[string]entry) map[string]entry {
	out := map[string]entry{}
	for k, v := range tree {
		if !strings.Contains(k, ".lmntd-") && k != "etc/.pwd.lock" && k != "etc/group-" && k != "etc/gshadow-" {
			out[k] = v
		}
	}
	return out
}

func assertSameTree(t *testing.T, want, got map[string]entry) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s is gone", k)
		} else if g != w {
			t.Errorf("%s differs: %+v, want %+v", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s is left over", k)
		}
	}
}
