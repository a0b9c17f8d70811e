package setup

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

func TestInsertAndRemoveBlock(t *testing.T) {
	snippets := []string{"[encrypted_file_bridge]", "[secure_print]"}
	for name, text := range map[string]string{
		"save config":          samplePrinterCfg,
		"no save config":       "[printer]\nkinematics: none\n",
		"no final newline":     "[printer]\nkinematics: none",
		"empty":                "",
		"save config at start": "#*# <---------------------- SAVE_CONFIG ---------------------->\n#*#\n",
	} {
		t.Run(name, func(t *testing.T) {
			patched := insertBlock(text, snippets)
			if !hasBlock(patched) {
				t.Fatalf("no block in\n%s", patched)
			}
			if i, j := strings.Index(patched, blockEnd), strings.Index(patched, "#*# <"); j >= 0 && j < i {
				t.Errorf("block after SAVE_CONFIG:\n%s", patched)
			}
			back, found := removeBlock(patched)
			want := text
			if name == "no final newline" {
				want += "\n" // the one change insertBlock cannot take back
			}
			if !found || back != want {
				t.Errorf("removeBlock = %q, want %q", back, want)
			}
		})
	}
	// A block whose end marker the owner deleted is left alone.
	broken := strings.Replace(insertBlock(samplePrinterCfg, snippets), blockEnd+"\n", "", 1)
	if out, found := removeBlock(broken); found || out != broken {
		t.Error("removeBlock touched an incomplete block")
	}
}

// A host an older lmnt setup wired has its edits inside lmntd.toml, listed
// in setup.json: --remove undoes them (the owner's later change stays).
func TestRemoveUndoesAnOlderSetupsEditsOfLmntdToml(t *testing.T) {
	h := mainsailOS(t)
	run(t, h, Options{})
	orig := h.read(ConfigFile)
	edited := strings.Replace(orig, "[klipper]\n", "[klipper]\nuser = \"pi\"\nconfig_file = \"/home/pi/printer_data/config/printer.cfg\"\n", 1)
	if edited == orig {
		t.Fatal("the shipped lmntd.toml has no [klipper] section")
	}
	h.write(ConfigFile, 0o644, 0, 0, edited)
	var m manifest
	if err := json.Unmarshal([]byte(h.read(ManifestFile)), &m); err != nil {
		t.Fatal(err)
	}
	m.ConfigDropIn = ""
	m.TOMLFile = ConfigFile
	m.TOML = []tomlEdit{{Key: "klipper.user", Line: `user = "pi"`}, {Key: "klipper.config_file", Line: `config_file = "/home/pi/printer_data/config/printer.cfg"`}}
	data, _ := json.Marshal(m)
	h.write(ManifestFile, 0o644, 0, 0, string(data))
	os.Remove(h.path(ConfigDropIn))
	remove(t, h, Options{})
	if got := h.read(ConfigFile); got != orig {
		t.Errorf("lmntd.toml after --remove:\n%s", got)
	}
}

func TestUnifiedDiff(t *testing.T) {
	old := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
	new := "a\nb\nc\nX\nd\ne\nf\ng\nh\ni\nj\nY\n"
	d := unifiedDiff("f", old, new)
	want := "--- f\n+++ f (after lmnt setup)\n@@ -1,6 +1,7 @@\n a\n b\n c\n+X\n d\n e\n f\n@@ -8,3 +9,4 @@\n h\n i\n j\n+Y\n"
	if d != want {
		t.Errorf("diff\n%s\nwant\n%s", d, want)
	}
	if unifiedDiff("f", old, old) != "" {
		t.Error("diff of equal texts")
	}
}

func TestRemoveLeavesTheOwnersLaterChanges(t *testing.T) {
	h := mainsailOS(t)
	run(t, h, Options{})
	// The owner edits lmntd.toml and replaces one extra.
	toml := h.read(ConfigFile) + "\n[log]\nlevel = \"debug\"\n"
	h.write(ConfigFile, 0o644, 0, 0, toml)
	link := "home/pi/klipper/klippy/extras/secure_print.py"
	if err := os.Remove(h.path(link)); err != nil {
		t.Fatal(err)
	}
	h.write(link, 0o644, uidPi, uidPi, "# the owner's own\n")
	rep, _ := remove(t, h, Options{})
	if h.read(ConfigFile) != toml {
		t.Error("--remove changed the owner's lmntd.toml")
	}
	if _, err := os.Stat(h.path(ConfigDropIn)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("setup's config drop-in is still there (%v)", err)
	}
	if h.read(link) != "# the owner's own\n" {
		t.Error("the owner's secure_print.py was removed")
	}
	var warnings []string
	for _, s := range rep.Steps {
		if s.Status == Warning {
			warnings = append(warnings, s.Detail)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "was replaced") {
		t.Errorf("warnings = %q", warnings)
	}
}
