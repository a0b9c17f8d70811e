// Package systemd holds lmntd's unit files; this test keeps the template
// units of a multi-instance host (lmntd@NAME) in step with the single
// instance's: the sandbox is written once, in lmntd.service.
package systemd

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the template units from the single-instance units")

// instanceEdits turn a line of the single-instance units into the
// template's; every other line is copied as is.
var instanceEdits = []struct{ from, to string }{
	{"Description=LMNT Marketplace printer agent", "Description=LMNT Marketplace printer agent for Klipper instance %i"},
	{"Requires=lmntd.socket lmntd-klipper.socket", "Requires=lmntd@%i.socket lmntd-klipper@%i.socket"},
	{"After=lmntd.socket lmntd-klipper.socket", "After=lmntd@%i.socket lmntd-klipper@%i.socket"},
	{"ExecStart=/usr/bin/lmntd", "ExecStart=/usr/bin/lmntd --instance %i"},
	// The TCP and proxy listeners are the default instance's; another
	// instance opens api.listen itself when its config sets it.
	{"Sockets=lmntd.socket lmntd-klipper.socket", "Sockets=lmntd@%i.socket lmntd-klipper@%i.socket"},
	// A sub-tree of the default instance's state: no instance name can
	// collide with its files.
	{"StateDirectory=lmntd", "StateDirectory=lmntd/instances/%i"},
	{"Also=lmntd.socket lmntd-klipper.socket", "Also=lmntd@%i.socket lmntd-klipper@%i.socket"},
	// Sockets.
	{"Description=LMNT Marketplace printer agent: local API socket", "Description=LMNT Marketplace printer agent: local API socket of Klipper instance %i"},
	{"Description=LMNT Marketplace printer agent: Klipper bridge socket", "Description=LMNT Marketplace printer agent: Klipper bridge socket of instance %i"},
	{"# lmntd decides what each caller may do. (nginx uses lmntd-proxy.socket.)", "# lmntd decides what each caller may do. (nginx reaches the default instance only.)"},
	{"ListenStream=/run/lmntd/api.sock", "ListenStream=/run/lmntd/%i/api.sock"},
	{"ListenSequentialPacket=/run/lmntd/klipper.sock", "ListenSequentialPacket=/run/lmntd/%i/klipper.sock"},
	// systemd creates /run/lmntd/%i for the socket as root: it must be
	// traversable; /run/lmntd (0750, group lmnt) still keeps others out.
	{"DirectoryMode=0750", "DirectoryMode=0755"},
	{"Service=lmntd.service", "Service=lmntd@%i.service"},
}

func instanceUnit(single string) string {
	lines := strings.Split(single, "\n")
	for i, l := range lines {
		for _, e := range instanceEdits {
			if l == e.from || strings.HasPrefix(e.from, "After=") && strings.HasPrefix(l, e.from+" ") {
				lines[i] = e.to + strings.TrimPrefix(l, e.from)
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}

func TestTemplateUnitsFollowTheSingleInstance(t *testing.T) {
	for single, tmpl := range map[string]string{
		"lmntd.service":        "lmntd@.service",
		"lmntd.socket":         "lmntd@.socket",
		"lmntd-klipper.socket": "lmntd-klipper@.socket",
	} {
		src, err := os.ReadFile(single)
		if err != nil {
			t.Fatal(err)
		}
		want := instanceUnit(string(src))
		if *update {
			if err := os.WriteFile(tmpl, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s does not follow %s (edit %s, then go test ./systemd -update):\n%s", tmpl, single, single, want)
		}
		for _, bad := range []string{"/run/lmntd/api.sock", "/run/lmntd/klipper.sock", "Service=lmntd.service", "lmntd-http.socket", "lmntd-proxy.socket"} {
			if strings.Contains(want, bad) {
				t.Errorf("%s still names the default instance's %s", tmpl, bad)
			}
		}
	}
}
