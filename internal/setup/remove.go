package setup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Remove undoes what Run recorded in the manifest, newest change first, and
// nothing else: a change the owner made since (a line edited, a link
// replaced) is left alone and reported. The owner's backups stay; the key
// and token an import handed to lmntd stay with lmntd (purging the package
// deletes them).
func Remove(ctx context.Context, opts Options) (*Report, error) {
	r := newRunner(ctx, opts)
	t, m, err := r.removalTarget()
	if err != nil {
		return r.report, err
	}
	if m == nil {
		fmt.Fprintf(r.out, "lmnt setup --remove: nothing to undo (%s not found: lmnt setup has not changed this system)\n", t.manifest)
		return r.report, nil
	}
	r.t, r.m, r.removing = t, m, true
	r.report.LmntdInstance = t.name
	mode := ""
	if r.opts.DryRun {
		mode = " (dry run: nothing is changed)"
	}
	r.report.Instance = Instance{Name: m.Instance, User: m.KlipperUser, ConfigFile: m.ConfigFile}
	fmt.Fprintf(r.out, "lmnt setup --remove: undoing the setup of Klipper instance %s (user %s, %s)%s\n",
		m.Instance, m.KlipperUser, m.ConfigFile, mode)

	if t.name != "" && r.live() && r.opts.Activator != nil && !r.opts.DryRun {
		if err := r.opts.Activator.Stop(r.ctx, t.name); err != nil {
			r.step("stop", Warning, "stopping "+t.unit()+" failed: "+err.Error(), "")
		} else {
			r.step("stop", Changed, "stopped "+t.unit()+" and its sockets", "")
		}
	}
	if err := r.handOverShared(); err != nil {
		return r.report, err
	}
	for _, fn := range []func() error{r.undoEnable, r.undoConfigDropIn, r.undoNetworkDropIn, r.undoTOML, r.undoASVC, r.undoPrinterCfg, r.undoDropIn, r.undoACLs, r.undoStubFolder, r.undoGroup, r.undoLinks} {
		if err := fn(); err != nil {
			return r.report, err
		}
	}
	if !r.opts.DryRun {
		if err := os.Remove(r.at(t.manifest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return r.report, fmt.Errorf("setup: %w", err)
		}
		if t.name != "" {
			removeIfEmpty(filepath.Dir(r.at(t.manifest)))
		}
	}
	if len(m.Backups) > 0 {
		fmt.Fprintf(r.out, "lmnt setup --remove: kept your backups: %s\n", strings.Join(m.Backups, ", "))
	}
	r.finish(m.Instance, "restart Klipper so it drops the lmntd extras: sudo systemctl restart "+klipperUnitGuess(m.Instance))
	return r.report, nil
}

func klipperUnitGuess(instance string) string {
	if strings.HasPrefix(instance, "klipper") {
		return instance
	}
	return "klipper"
}

// editFile applies undo to a file's text and writes it back (keeping owner
// and mode) unless this is a dry run.
func (r *runner) editFile(step, host string, undo func(string) (string, []string)) error {
	old, err := os.ReadFile(r.at(host))
	if errors.Is(err, fs.ErrNotExist) {
		r.step(step, Skipped, host+" no longer exists", "")
		return nil
	}
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	text, warnings := undo(string(old))
	for _, w := range warnings {
		r.step(step, Warning, w, "")
	}
	if text == string(old) {
		return nil
	}
	diff := unifiedDiff(host, string(old), text)
	if !r.opts.DryRun {
		if err := writeFileLike(r.at(host), []byte(text), r.at(host)); err != nil {
			return err
		}
	}
	r.step(step, Changed, "restored "+host, diff)
	return nil
}

func (r *runner) undoTOML() error {
	if r.m.TOMLFile == "" || len(r.m.TOML) == 0 {
		return nil
	}
	err := r.editFile("lmntd.toml", r.m.TOMLFile, func(text string) (string, []string) {
		var warns []string
		for i := len(r.m.TOML) - 1; i >= 0; i-- {
			e := r.m.TOML[i]
			var ok bool
			if text, ok = undoTOMLEdit(text, e); !ok {
				warns = append(warns, fmt.Sprintf("%s was changed since setup; left as it is", e.Key))
			}
		}
		return text, warns
	})
	r.m.TOML = nil
	return err
}

func (r *runner) undoASVC() error {
	if r.m.ASVC == "" {
		return nil
	}
	return r.editFile("moonraker", r.m.ASVC, func(text string) (string, []string) {
		lines := strings.SplitAfter(text, "\n")
		for i, l := range lines {
			if strings.TrimSpace(l) == r.t.asvcService {
				return strings.Join(append(lines[:i:i], lines[i+1:]...), ""), nil
			}
		}
		return text, nil
	})
}

func (r *runner) undoPrinterCfg() error {
	if r.m.PrinterCfg == "" {
		return nil
	}
	r.report.RestartKlipper = true
	return r.editFile("printer.cfg", r.m.PrinterCfg, func(text string) (string, []string) {
		removed := false
		for {
			next, found := removeBlock(text)
			if !found {
				break
			}
			text, removed = next, true
		}
		if !removed {
			return text, []string{"the lmntd block (between \"" + blockBegin + "\" and \"" + blockEnd +
				"\") is no longer complete; remove [encrypted_file_bridge], [secure_print] and the SDCARD_PRINT_FILE macro by hand"}
		}
		return text, nil
	})
}

func (r *runner) undoDropIn() error {
	if r.m.DropIn == "" {
		return nil
	}
	return r.removeOwnFile("unit", r.m.DropIn)
}

func (r *runner) undoConfigDropIn() error {
	if r.m.ConfigDropIn == "" {
		return nil
	}
	if err := r.removeOwnFile("config", r.m.ConfigDropIn); err != nil {
		return err
	}
	r.m.ConfigDropIn = ""
	return nil
}

func (r *runner) undoNetworkDropIn() error {
	if r.m.NetworkDropIn == "" {
		return nil
	}
	if err := r.removeOwnFile("status page", r.m.NetworkDropIn); err != nil {
		return err
	}
	r.m.NetworkDropIn = ""
	return nil
}

// removeOwnFile deletes a file setup created, and its directory if setup's
// file was the only one in it.
func (r *runner) removeOwnFile(step, host string) error {
	if !r.opts.DryRun {
		if err := os.Remove(r.at(host)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("setup: %w", err)
		}
		if err := removeIfEmpty(filepath.Dir(r.at(host))); err != nil {
			return err
		}
	}
	r.step(step, Changed, "deleted "+host, "")
	return nil
}

func (r *runner) undoACLs() error {
	for i := len(r.m.ACLs) - 1; i >= 0; i-- {
		g := r.m.ACLs[i]
		if !r.opts.DryRun {
			if err := revokeACL(r.ctx, r.at(g.Path), g); err != nil {
				return err
			}
		}
		kind := "ACL"
		if g.Default {
			kind = "default ACL"
		}
		detail := fmt.Sprintf("removed %s user:%s:%s from %s", kind, ServiceUser, g.Perms, g.Path)
		if g.Previous != "" {
			detail = fmt.Sprintf("restored %s user:%s:%s on %s", kind, ServiceUser, g.Previous, g.Path)
		}
		r.step("access", Changed, detail, "")
	}
	return nil
}

func (r *runner) undoGroup() error {
	if r.m.GroupAdded == "" {
		return nil
	}
	if !r.opts.DryRun {
		if _, err := setGroupMember(r.root, SocketGroup, r.m.GroupAdded, false); err != nil && !errors.Is(err, ErrNoGroup) {
			return err
		}
	}
	r.report.RestartKlipper = true
	r.step("group", Changed, "removed "+r.m.GroupAdded+" from group "+SocketGroup, "")
	return nil
}

func (r *runner) undoLinks() error {
	for i := len(r.m.Links) - 1; i >= 0; i-- {
		l := r.m.Links[i]
		removed, replaced, err := r.removeLink("extras", l)
		switch {
		case err != nil:
			return err
		case replaced:
			continue
		case removed:
			r.report.RestartKlipper = true
			r.step("extras", Changed, "removed "+l.Path, "")
		}
		if l.MovedAside == "" {
			continue
		}
		if _, err := os.Lstat(r.at(l.MovedAside)); err != nil {
			r.step("extras", Warning, "the file setup moved aside, "+l.MovedAside+", is gone", "")
			continue
		}
		if !r.opts.DryRun {
			if err := os.Rename(r.at(l.MovedAside), r.at(l.Path)); err != nil {
				return fmt.Errorf("setup: restoring %s: %w", l.Path, err)
			}
		}
		r.step("extras", Changed, "put back "+path.Base(l.Path)+" that setup had moved aside", "")
	}
	return nil
}

// removeLink deletes a symlink setup made, unless it is gone (skipped) or
// points elsewhere now (replaced: the owner's change stands).
func (r *runner) removeLink(step string, l linkRecord) (removed, replaced bool, err error) {
	cur, err := os.Readlink(r.at(l.Path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.step(step, Skipped, l.Path+" no longer exists", "")
		return false, false, nil
	case err != nil || cur != l.Target:
		r.step(step, Warning, l.Path+" was replaced since setup; left as it is", "")
		return false, true, nil
	}
	if !r.opts.DryRun {
		if err := os.Remove(r.at(l.Path)); err != nil {
			return false, false, fmt.Errorf("setup: %w", err)
		}
	}
	return true, false, nil
}

// removeIfEmpty deletes dir when nothing is left in it.
func removeIfEmpty(dir string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	return nil
}
