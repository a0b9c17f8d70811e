package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// Print farms: the default lmntd.service serves the first Klipper instance
// setup wires. A further Klipper instance gets its own lmntd@NAME (the
// template units), with its own config file, unit drop-in, sockets
// (/run/lmntd/NAME) and manifest, so `lmnt setup --instance NAME --remove`
// undoes that instance alone.

// Where a farm instance's files go; NAME is the lmntd instance name.
const (
	instanceManifestFmt = "/etc/lmntd/instances/%s.setup.json"
	instanceDropInFmt   = "/etc/systemd/system/lmntd@%s.service.d/klipper.conf"
	// The units' directory in the package (goreleaser.yaml) and the links
	// `systemctl enable lmntd@NAME.socket` makes (WantedBy=sockets.target).
	unitDir  = "/lib/systemd/system"
	wantsDir = "/etc/systemd/system/sockets.target.wants"
)

// target is the lmntd a setup run wires: the default lmntd.service (name
// "") or lmntd@name.
type target struct {
	name          string
	manifest      string
	dropIn        string
	configFile    string // the config file setup owns
	ownerConfig   string // the owner's config, whose drop-in directory holds the network drop-in
	networkDropIn string
	asvcService   string // the name Moonraker's moonraker.asvc lists
	bridgeSocket  string
}

func defaultTarget() target {
	return target{manifest: ManifestFile, dropIn: DropInFile, configFile: ConfigDropIn, ownerConfig: ConfigFile,
		networkDropIn: NetworkDropIn, asvcService: asvcService, bridgeSocket: klippercfg.DefaultBridgeSocket}
}

func instanceTarget(name string) target {
	cfg := config.InstanceConfigFile(name)
	return target{
		name:          name,
		manifest:      fmt.Sprintf(instanceManifestFmt, name),
		dropIn:        fmt.Sprintf(instanceDropInFmt, name),
		configFile:    cfg,
		ownerConfig:   cfg,
		networkDropIn: config.DropInDir(cfg) + "/60-allow-network.toml",
		asvcService:   "lmntd@" + name,
		bridgeSocket:  config.InstanceDefaults(name)["klipper.bridge_socket"].(string),
	}
}

// unit is the lmntd service unit of the target.
func (t target) unit() string {
	if t.name == "" {
		return ServiceUnit
	}
	return "lmntd@" + t.name + ".service"
}

// socketUnits are the target's socket units (enabled by setup for a farm
// instance; the package enables the default's).
func (t target) socketUnits() []string {
	return []string{"lmntd@" + t.name + ".socket", "lmntd-klipper@" + t.name + ".socket"}
}

// lmntdInstanceName names the lmntd@ instance for a Klipper instance the way
// lmntd's own instance defaults expect it: printer_2 for KIAUH's
// klipper-printer_2.service and ~/printer_2_data.
func lmntdInstanceName(in Instance) (string, error) {
	name := ""
	switch base := path.Base(in.DataDir); {
	case in.DataDir != "" && strings.HasSuffix(base, "_data") && base != "printer_data":
		name = strings.TrimSuffix(base, "_data")
	case strings.HasPrefix(in.Name, "klipper-"):
		name = strings.TrimPrefix(in.Name, "klipper-")
	default:
		name = in.Name
	}
	if err := config.CheckInstanceName(name); err != nil {
		return "", fmt.Errorf("%w: Klipper instance %s cannot be served by a further lmntd: %v", ErrOtherInstance, in.Name, err)
	}
	return name, nil
}

// chooseTarget picks the lmntd for Klipper instance in: the one already
// wired to it, else the default lmntd while it serves no other instance,
// else a further lmntd@NAME.
func (r *runner) chooseTarget(in Instance) (target, *manifest, error) {
	def, err := loadManifest(r.at(ManifestFile))
	if err != nil {
		return target{}, nil, err
	}
	if def == nil || def.Instance == in.Name {
		return defaultTarget(), def, nil
	}
	name, err := lmntdInstanceName(in)
	if err != nil {
		return target{}, nil, fmt.Errorf("%w (the default lmntd serves %q, %s)", err, def.Instance, def.ConfigFile)
	}
	t := instanceTarget(name)
	m, err := loadManifest(r.at(t.manifest))
	if err != nil {
		return target{}, nil, err
	}
	if m != nil && m.Instance != in.Name {
		return target{}, nil, fmt.Errorf("%w (lmntd@%s is set up for %q, %s)", ErrOtherInstance, name, m.Instance, m.ConfigFile)
	}
	return t, m, nil
}

// enableSockets enables a farm instance's two sockets as `systemctl enable`
// does (a link in sockets.target.wants to the template unit), so it works
// on an image being built (--root) too. The default lmntd's sockets are the
// package's to enable.
func (r *runner) enableSockets(Instance) error {
	if r.t.name == "" {
		return nil
	}
	for _, unit := range r.t.socketUnits() {
		template := path.Join(unitDir, strings.Replace(unit, "@"+r.t.name+".", "@.", 1))
		if _, err := os.Stat(r.at(template)); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotInstalled, template, err)
		}
		link := path.Join(wantsDir, unit)
		if cur, err := os.Readlink(r.at(link)); err == nil && cur == template {
			r.step("enable", Unchanged, unit+" is enabled", "")
			continue
		} else if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("setup: %s is in the way of enabling %s", link, unit)
		}
		if !r.opts.DryRun {
			if err := os.MkdirAll(r.at(wantsDir), 0o755); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			if err := os.Symlink(template, r.at(link)); err != nil {
				return fmt.Errorf("setup: enabling %s: %w", unit, err)
			}
			r.m.Enabled = append(r.m.Enabled, linkRecord{Path: link, Target: template})
			if err := r.saveManifest(); err != nil {
				return err
			}
		}
		r.step("enable", Changed, "enabled "+unit+" ("+link+")", "")
	}
	return nil
}

// undoEnable takes out the links enableSockets made.
func (r *runner) undoEnable() error {
	for i := len(r.m.Enabled) - 1; i >= 0; i-- {
		l := r.m.Enabled[i]
		removed, _, err := r.removeLink("enable", l)
		if err != nil {
			return err
		}
		if removed {
			r.step("enable", Changed, "disabled "+path.Base(l.Path), "")
		}
	}
	if r.opts.DryRun || len(r.m.Enabled) == 0 {
		return nil
	}
	return removeIfEmpty(r.at(wantsDir))
}

// removalTarget is the lmntd whose setup --remove undoes: lmntd.service
// without Options.Instance; with it, the farm instance set up for that
// Klipper instance, or the default lmntd when that is the one serving it.
func (r *runner) removalTarget() (target, *manifest, error) {
	def, err := loadManifest(r.at(ManifestFile))
	if err != nil {
		return target{}, nil, err
	}
	want := r.opts.Instance
	if want == "" {
		return defaultTarget(), def, nil
	}
	for _, name := range []string{want, strings.TrimPrefix(want, "klipper-"), strings.TrimSuffix(want, "_data")} {
		if config.CheckInstanceName(name) != nil {
			continue
		}
		t := instanceTarget(name)
		m, err := loadManifest(r.at(t.manifest))
		if err != nil {
			return target{}, nil, err
		}
		if m != nil {
			return t, m, nil
		}
	}
	if def != nil && (def.Instance == want || strings.HasSuffix(def.Instance, "-"+want)) {
		return defaultTarget(), def, nil
	}
	return target{}, nil, fmt.Errorf("%w: lmnt setup has wired no lmntd to Klipper instance %q", ErrNoInstance, want)
}

// otherManifests are the manifests of every other lmntd setup wired on this
// host, by manifest path.
func (r *runner) otherManifests() (map[string]*manifest, error) {
	paths, err := filepath.Glob(r.at(fmt.Sprintf(instanceManifestFmt, "*")))
	if err != nil {
		return nil, err
	}
	others := map[string]*manifest{}
	for _, p := range append(paths, r.at(ManifestFile)) {
		host := "/" + strings.TrimPrefix(strings.TrimPrefix(p, r.root), "/")
		if host == r.t.manifest {
			continue
		}
		m, err := loadManifest(p)
		if err != nil {
			return nil, err
		}
		if m != nil {
			others[host] = m
		}
	}
	return others, nil
}

// handOverShared keeps what another wired lmntd still needs: the extras
// links (one Klipper checkout serves every KIAUH instance), the Klipper
// user's group membership and the ACLs on the path down to another
// instance's config directory. They move into that instance's manifest, so
// its --remove undoes them later, and only then.
func (r *runner) handOverShared() error {
	others, err := r.otherManifests()
	if err != nil || len(others) == 0 {
		return err
	}
	hosts := make([]string, 0, len(others))
	for h := range others {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	heir, hm := hosts[0], others[hosts[0]]
	changed := false
	if len(r.m.Links) > 0 {
		hm.Links = append(hm.Links, r.m.Links...)
		r.m.Links, changed = nil, true
		r.step("extras", Unchanged, "kept: another lmntd's Klipper instance uses them (now recorded in "+heir+")", "")
	}
	if r.m.GroupAdded != "" {
		for _, o := range others {
			if o.KlipperUser == r.m.GroupAdded && hm.GroupAdded == "" {
				hm.GroupAdded, r.m.GroupAdded, changed = r.m.GroupAdded, "", true
				r.step("group", Unchanged, "kept "+hm.GroupAdded+" in group "+SocketGroup+": another lmntd's Klipper runs as that user", "")
				break
			}
		}
	}
	var handed, rest []aclGrant
	for _, g := range r.m.ACLs {
		shared := false
		for _, o := range others {
			dir := path.Dir(o.ConfigFile)
			if g.Path == dir || strings.HasPrefix(dir, strings.TrimSuffix(g.Path, "/")+"/") {
				shared = true
			}
		}
		if shared {
			handed = append(handed, g)
		} else {
			rest = append(rest, g)
		}
	}
	if len(handed) > 0 {
		hm.ACLs = append(hm.ACLs, handed...)
		r.m.ACLs, changed = rest, true
		r.step("access", Unchanged, fmt.Sprintf("kept %d ACL(s) on the path to another lmntd's Klipper config", len(handed)), "")
	}
	if !changed || r.opts.DryRun {
		return nil
	}
	if err := hm.save(r.at(heir)); err != nil {
		return err
	}
	return r.saveManifest()
}
