package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// allowNetwork lets browsers on the owner's network use the status page:
// api.trusted_clients = ["CIDR"] in lmntd.toml. Only when the owner said
// yes (Options.AllowNetwork); a trusted_clients the owner already wrote is
// left as it is. The edit is recorded, so --remove takes it out again.
func (r *runner) allowNetwork(Instance) error {
	if !r.opts.AllowNetwork.IsValid() {
		return nil
	}
	file := r.at(ConfigFile)
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("setup: %w", err)
	}
	lines := strings.Split(string(old), "\n")
	start, end := sectionBounds(lines, "api")
	at := start + 1 // under the header, or under the documented default
	for i := start + 1; start >= 0 && i < end; i++ {
		t := strings.TrimSpace(lines[i])
		if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == "trusted_clients" {
			r.step("status page", Unchanged, "api.trusted_clients is already set in "+ConfigFile+"; left as it is", "")
			return nil
		}
		if c, ok := strings.CutPrefix(t, "#"); ok && at == start+1 {
			if k, _, ok := strings.Cut(c, "="); ok && strings.TrimSpace(k) == "trusted_clients" {
				at = i + 1
			}
		}
	}
	line := fmt.Sprintf("trusted_clients = [%q]", r.opts.AllowNetwork.Masked().String())
	if start < 0 {
		text := strings.TrimRight(string(old), "\n")
		if text != "" {
			text += "\n\n"
		}
		lines = strings.Split(text+"[api]\n"+line+"\n", "\n")
	} else {
		lines = append(lines[:at], append([]string{line}, lines[at:]...)...)
	}
	text := strings.Join(lines, "\n")
	diff := unifiedDiff(ConfigFile, string(old), text)
	if !r.opts.DryRun {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		if err := writeFileLike(file, []byte(text), file); err != nil {
			return err
		}
		r.m.TOMLFile = ConfigFile
		r.m.TOML = append(r.m.TOML, tomlEdit{Key: "api.trusted_clients", Line: line})
		if err := r.saveManifest(); err != nil {
			return err
		}
	}
	r.step("status page", Changed, "browsers on "+r.opts.AllowNetwork.Masked().String()+" may use the status page (api.trusted_clients)", diff)
	return nil
}
