package mdstub

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func TestSanitizeTitle(t *testing.T) {
	for in, want := range map[string]string{
		"Benchy":                        "Benchy",
		"Dragon / Wing: left*":          "Dragon Wing left",
		"../../etc/passwd":              "etc passwd",
		"  Vase\x00\n(PETG)  ":          "Vase (PETG)",
		"Ünïcødé 龍":                     "Ünïcødé 龍",
		"":                              "LMNT job",
		"???":                           "LMNT job",
		".hidden":                       "hidden",
		"part.gcode":                    "part",
		"a;b#c*d{e}%f":                  "a b c d e f",
		string(make([]byte, 0)) + "x y": "x y",
	} {
		if got := SanitizeTitle(in); got != want {
			t.Errorf("SanitizeTitle(%q) = %q, want %q", in, got, want)
		}
	}
	long := SanitizeTitle(string(make([]rune, 0)) + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	if n := len([]rune(long)); n != maxTitleRunes {
		t.Errorf("long title cut to %d runes", n)
	}
}

func TestReserveNeverCollides(t *testing.T) {
	d := Dir{Gcodes: t.TempDir()}
	if err := os.Mkdir(d.Path(), 0o755); err != nil {
		t.Fatal(err)
	}
	first, err := d.Reserve("Benchy", nil)
	if err != nil || first != ".lmnt/Benchy.gcode" {
		t.Fatalf("Reserve = %q, %v", first, err)
	}
	if err := d.Write(first, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	second, _ := d.Reserve("benchy", nil)
	if second != ".lmnt/benchy (2).gcode" {
		t.Fatalf("second = %q", second)
	}
	third, _ := d.Reserve("Benchy", map[string]bool{second: true})
	if third != ".lmnt/Benchy (3).gcode" {
		t.Fatalf("third = %q", third)
	}
	st, err := os.Stat(filepath.Join(d.Gcodes, first))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("stub mode %v, %v", st.Mode(), err)
	}
}

func TestCleanRemovesLeftoversOnly(t *testing.T) {
	d := Dir{Gcodes: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(d.Path(), ".thumbs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"old.gcode", "live.gcode", ".stub-123.tmp", ".live.gcode.tmp-4711", ".thumbs/old-32x32.png", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(d.Path(), n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := d.Clean(map[string]bool{".lmnt/live.gcode": true})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(removed)
	// .live.gcode.tmp-4711: a write (atomicfile's temporary) a crash cut short.
	if want := []string{".lmnt/.live.gcode.tmp-4711", ".lmnt/.stub-123.tmp", ".lmnt/old.gcode"}; !reflect.DeepEqual(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, n := range []string{"live.gcode", ".thumbs/old-32x32.png", "notes.txt"} {
		if _, err := os.Stat(filepath.Join(d.Path(), n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if err := d.Remove("../printer.cfg"); err == nil {
		t.Fatal("Remove accepted a path outside the stub folder")
	}
}
