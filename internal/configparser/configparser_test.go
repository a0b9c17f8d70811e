package configparser

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// recorder writes what Read reports as one line per event.
type recorder struct {
	events []string
	stopAt int // refuse (stop) at this line; -1: go on
}

func (r *recorder) Section(name string, at int) {
	r.events = append(r.events, fmt.Sprintf("%d [%s]", at, name))
}
func (r *recorder) Option(name, value string, at int) {
	r.events = append(r.events, fmt.Sprintf("%d %s=%q", at, name, value))
}
func (r *recorder) Refused(p Problem, text string, at int) bool {
	r.events = append(r.events, fmt.Sprintf("%d refused %d %q", at, p, text))
	return at != r.stopAt
}

// lines makes input with "#" comments marked, as Klipper's caller does.
func lines(text string) []Line {
	var out []Line
	for _, l := range strings.Split(text, "\n") {
		at := strings.Index(l, "#")
		out = append(out, Line{Text: l, CommentAt: at})
	}
	return out
}

func TestRead(t *testing.T) {
	in := lines("stray: 1\n" + // 0: before any section
		"[Printer]\n" + // 1
		"Max_Velocity: 300\n" + // 2: names are lower-cased
		"gcode:\n" + // 3: a multi-line value
		"  G28\n" + // 4
		"\n" + // 5: a blank line stays inside the value
		"  # a comment line adds nothing\n" + // 6
		"  G1 Z10\n" + // 7
		"junk line\n" + // 8: refused, ends the value above
		"[extruder] \n" + // 9
		"nozzle_diameter = 0.400 # inline\n" + // 10
		"[Printer]\n" + // 11: a repeated section merges
		"max_velocity: 250") // 12
	r := &recorder{stopAt: -1}
	if !Read(in, r) {
		t.Fatal("Read stopped although the handler went on")
	}
	want := []string{
		`0 refused 0 "stray: 1"`,
		`1 [Printer]`,
		`2 max_velocity="300"`,
		`3 gcode="\nG28\n\nG1 Z10"`,
		`8 refused 1 "junk line"`,
		`9 [extruder]`,
		`10 nozzle_diameter="0.400"`,
		`11 [Printer]`,
		`12 max_velocity="250"`,
	}
	if !reflect.DeepEqual(r.events, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(r.events, "\n"), strings.Join(want, "\n"))
	}
}

func TestReadStopsWhenTheHandlerSaysSo(t *testing.T) {
	r := &recorder{stopAt: 1}
	if Read(lines("[s]\nnot an option\na: 1"), r) {
		t.Fatal("Read went on after the handler stopped it")
	}
	if want := []string{`0 [s]`, `1 refused 1 "not an option"`}; !reflect.DeepEqual(r.events, want) {
		t.Fatalf("events %q, want %q", r.events, want)
	}
}
