package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/apiclient"
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/setup"
)

// setup wires lmntd into Klipper (`lmnt setup`) or takes it out (--remove).
// The work is internal/setup's; this is its command line and its two ways of
// reaching the running daemon (import, restart when idle).
func (e *env) setup(args []string) (int, error) {
	fs := e.flags("setup", "setup [--instance NAME] [--config FILE --klipper-user USER --extras DIR] [--import-legacy] [--dry-run] [--remove]")
	var o setup.Options
	fs.StringVar(&o.Instance, "instance", "", "only this Klipper instance (klipper-printer_1, or printer_1); without it every instance found is wired, one the default lmntd does not serve getting its own lmntd@NAME")
	fs.StringVar(&o.ConfigFile, "config", "", "Klipper's printer.cfg, for installs setup does not find by itself")
	fs.StringVar(&o.KlipperUser, "klipper-user", "", "the user Klipper runs as (default: the User= of its unit)")
	fs.StringVar(&o.ExtrasDir, "extras", "", "Klipper's klippy/extras directory (default: next to the klippy.py its unit runs)")
	fs.BoolVar(&o.ImportLegacy, "import-legacy", false, "hand the old LMNT plugin's key and token to lmntd, keeping this printer's pairing")
	fs.BoolVarP(&o.DryRun, "dry-run", "n", false, "show what would change, with diffs, and change nothing")
	remove := fs.Bool("remove", false, "undo everything an earlier lmnt setup did (with --instance: for that Klipper instance only)")
	fs.StringVar(&o.Root, "root", "/", "the system to work on (an image being built, mounted elsewhere)")
	allow := fs.String("allow-network", "", `let browsers on this network use the status page: a CIDR, or "local" for the printer's own (asked when on a terminal)`)
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if !*remove {
		var err error
		if o.AllowNetwork, err = e.networkToAllow(*allow, o.DryRun); err != nil {
			return 2, err
		}
	}
	if *remove && (o.ImportLegacy || o.ConfigFile != "") {
		return 2, errors.New("--remove undoes what was recorded; it takes no other flags but --instance, --dry-run and --root")
	}
	if os.Geteuid() != 0 && !o.DryRun {
		return 2, errors.New("setup changes system files: run it with sudo (or try --dry-run)")
	}
	o.Out = e.stdout
	o.Importer = daemonImporter{e}
	o.Activator = daemonActivator{e}
	var err error
	if *remove {
		_, err = setup.Remove(e.ctx, o)
	} else {
		_, err = setup.RunEvery(e.ctx, o)
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// daemonImporter asks lmntd to import the old plugin's files from the copy
// setup staged where lmntd can read them.
type daemonImporter struct{ e *env }

func (d daemonImporter) ImportLegacy(ctx context.Context, dir string) (setup.LegacyResult, error) {
	var res apitype.ImportLegacyResult
	if err := d.e.c.Post(ctx, "/lmnt/v1/keys/import-legacy", apitype.ImportLegacyRequest{Dir: dir}, &res); err != nil {
		return setup.LegacyResult{}, err
	}
	return setup.LegacyResult{KeyID: res.KeyID, TokenImported: res.TokenImported, PrinterID: res.PrinterID}, nil
}

// daemonActivator reloads systemd, starts a farm instance's enabled
// sockets, then has a running lmntd restart once no job is running, so the
// new drop-in and config apply without ever interrupting a print. A
// stopped lmntd picks them up when it starts.
type daemonActivator struct{ e *env }

func (d daemonActivator) Activate(ctx context.Context, instance string) error {
	if err := systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	unit := setup.ServiceUnit
	if instance != "" {
		unit = "lmntd@" + instance + ".service"
		sockets := []string{"lmntd@" + instance + ".socket", "lmntd-klipper@" + instance + ".socket"}
		if exec.CommandContext(ctx, "systemctl", append([]string{"--quiet", "is-enabled"}, sockets...)...).Run() == nil {
			if err := systemctl(ctx, append([]string{"start"}, sockets...)...); err != nil {
				return err
			}
		}
	}
	if exec.CommandContext(ctx, "systemctl", "--quiet", "is-active", unit).Run() != nil {
		return nil
	}
	c := apiclient.New(instanceSocket(d.e.runDir, instance), d.e.c.Timeout())
	var res apitype.RestartResult
	return c.Post(ctx, "/lmnt/v1/restart", map[string]bool{"when_idle": true}, &res)
}

// Stop stops a farm instance's lmntd and its sockets before setup --remove
// takes its files away, and deletes the socket files systemd leaves behind
// (RemoveOnStop=no), so `lmnt status` no longer lists the instance.
func (d daemonActivator) Stop(ctx context.Context, instance string) error {
	if config.CheckInstanceName(instance) != nil {
		return fmt.Errorf("not a farm instance: %q", instance)
	}
	if err := systemctl(ctx, "stop", "lmntd@"+instance+".service", "lmntd@"+instance+".socket", "lmntd-klipper@"+instance+".socket"); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Dir(instanceSocket(d.e.runDir, instance)))
}

func systemctl(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// networkToAllow is the network whose browsers may use the status page:
// the --allow-network flag, or the owner's answer when setup runs on a
// terminal. Off unless the owner says yes.
func (e *env) networkToAllow(flag string, dryRun bool) (netip.Prefix, error) {
	switch flag {
	case "":
		f, ok := e.stdin.(*os.File)
		if !ok || !isTerminal(f) || dryRun {
			return netip.Prefix{}, nil
		}
		lan, ok := localNetwork()
		if !ok {
			return netip.Prefix{}, nil
		}
		fmt.Fprintf(e.stdout, "Let browsers on %s open lmntd's status page? Anyone there could pair\n"+
			"the printer and confirm the bed is clear. [y/N] ", lan)
		answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a == "y" || a == "yes" {
			return lan, nil
		}
		return netip.Prefix{}, nil
	case "local":
		lan, ok := localNetwork()
		if !ok {
			return netip.Prefix{}, errors.New("--allow-network local: this machine has no private IPv4 network; give the network as a CIDR")
		}
		return lan, nil
	}
	p, err := netip.ParsePrefix(flag)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--allow-network %q: want a network such as 192.168.1.0/24, or local", flag)
	}
	return p.Masked(), nil
}

// localNetwork is the printer's own private IPv4 network, from the first
// interface that is up and has one.
func localNetwork() (netip.Prefix, bool) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Prefix{}, false
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if ones, _ := ipn.Mask.Size(); ok && ip.Unmap().Is4() && ip.IsPrivate() {
				return netip.PrefixFrom(ip.Unmap(), ones).Masked(), true
			}
		}
	}
	return netip.Prefix{}, false
}
