package setup

import (
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

func TestTOMLEdits(t *testing.T) {
	orig := "# head\n\n[klipper]\n# The user.\n# user = \"pi\"\n\n# config_file = \"/x\"\n\n[api]\n# socket = \"\"\n"
	text, e1, ok := setTOMLKey(orig, "klipper", "user", "biqu")
	if !ok || !strings.Contains(text, "# user = \"pi\"\nuser = \"biqu\"\n") {
		t.Fatalf("insert under the documented default:\n%s", text)
	}
	if _, _, again := setTOMLKey(text, "klipper", "user", "biqu"); again {
		t.Error("setting the same value again reports a change")
	}
	text2, e2, ok := setTOMLKey(text, "klipper", "user", "pi")
	if !ok || e2.Previous != `user = "biqu"` || !strings.Contains(text2, "\nuser = \"pi\"\n") {
		t.Fatalf("replace: %+v\n%s", e2, text2)
	}
	back, ok := undoTOMLEdit(text2, e2)
	if !ok || back != text {
		t.Errorf("undo replace:\n%s", back)
	}
	back, ok = undoTOMLEdit(back, e1)
	if !ok || back != orig {
		t.Errorf("undo insert:\n%q\nwant\n%q", back, orig)
	}
	// A value with a trailing comment counts as set; a missing section is appended.
	if _, _, changed := setTOMLKey("[klipper]\nuser = \"pi\" # me\n", "klipper", "user", "pi"); changed {
		t.Error("value with a comment not recognised")
	}
	text, _, _ = setTOMLKey("[api]\nsocket = \"/s\"\n", "klipper", "user", "pi")
	if text != "[api]\nsocket = \"/s\"\n\n[klipper]\nuser = \"pi\"\n" {
		t.Errorf("append section:\n%q", text)
	}
	// The key in another section is not touched.
	text, _, _ = setTOMLKey("[other]\nuser = \"x\"\n[klipper]\n", "klipper", "user", "pi")
	if !strings.HasPrefix(text, "[other]\nuser = \"x\"\n[klipper]\nuser = \"pi\"") {
		t.Errorf("wrong section:\n%s", text)
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
	// The owner edits the user line setup wrote, and replaces one extra.
	toml := strings.Replace(h.read(ConfigFile), "\nuser = \"pi\"\n", "\nuser = \"klipper\"\n", 1)
	h.write(ConfigFile, 0o644, 0, 0, toml)
	link := "home/pi/klipper/klippy/extras/secure_print.py"
	if err := os.Remove(h.path(link)); err != nil {
		t.Fatal(err)
	}
	h.write(link, 0o644, uidPi, uidPi, "# the owner's own\n")
	rep, _ := remove(t, h, Options{})
	if !strings.Contains(h.read(ConfigFile), "\nuser = \"klipper\"\n") || strings.Contains(h.read(ConfigFile), "\nconfig_file = \"") {
		t.Error("the owner's klipper.user was undone, or setup's config_file line stayed")
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
	if len(warnings) != 2 || !strings.Contains(warnings[0], "klipper.user was changed") || !strings.Contains(warnings[1], "was replaced") {
		t.Errorf("warnings = %q", warnings)
	}
}
