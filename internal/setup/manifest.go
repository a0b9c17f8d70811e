package setup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// manifest records every change setup made to the host, so --remove undoes
// exactly those and nothing the owner did. It holds paths only, no secrets.
type manifest struct {
	Version     int    `json:"version"`
	Instance    string `json:"instance"`
	KlipperUser string `json:"klipper_user"`
	ConfigFile  string `json:"config_file"`

	Links      []linkRecord `json:"links,omitempty"`
	GroupAdded string       `json:"group_added,omitempty"` // the user setup added to group lmnt
	ACLs       []aclGrant   `json:"acls,omitempty"`
	DropIn     string       `json:"drop_in,omitempty"`
	PrinterCfg string       `json:"printer_cfg,omitempty"` // the file the lmntd block went into
	Backups    []string     `json:"backups,omitempty"`     // kept on --remove: they are the owner's files
	ASVC       string       `json:"moonraker_asvc,omitempty"`
	// ConfigDropIn is lmntd's config drop-in setup wrote.
	ConfigDropIn string `json:"config_drop_in,omitempty"`
	// NetworkDropIn is the --allow-network drop-in setup wrote.
	NetworkDropIn string `json:"network_drop_in,omitempty"`
	// TOMLFile and TOML are the in-place edits of lmntd.toml an older
	// setup made; --remove still undoes them.
	TOMLFile   string     `json:"toml_file,omitempty"`
	TOML       []tomlEdit `json:"toml,omitempty"`
	StubFolder string     `json:"stub_folder,omitempty"` // the metadata stub folder setup created
	// Enabled are the sockets.target.wants links of a farm instance's sockets.
	Enabled []linkRecord `json:"enabled,omitempty"`
}

// linkRecord is one extra linked into klippy/extras.
type linkRecord struct {
	Path   string `json:"path"`
	Target string `json:"target"`
	// MovedAside is where a file that was in the way went ("" when none).
	MovedAside string `json:"moved_aside,omitempty"`
}

const manifestVersion = 1

func loadManifest(path string) (*manifest, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("setup: reading %s: %w", path, err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("setup: %s is corrupt (%v); fix or delete it, then undo by hand what it listed", path, err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("setup: %s has version %d; this lmnt understands %d", path, m.Version, manifestVersion)
	}
	return &m, nil
}

func (m *manifest) save(path string) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), 0o644, -1, -1, nil)
}
