// Package deps checks the module's import rules: what the shipped binaries
// and the leaf packages must never link (tailscale's deps_test idea). The
// rules are a table; each says why. It reads the real import graph with
// `go list -deps -json` for the release build (linux, CGO_ENABLED=0).
package deps

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lmnt-marketplace/lmntd"

// A rule constrains what the packages in From link, directly or through
// any chain of imports. Paths are relative to the module; a path also
// covers the packages below it (internal/klipper covers
// internal/klipper/standin).
type rule struct {
	From []string
	// Forbid lists packages none of From may link.
	Forbid []string
	// Only, when not nil, lists the module packages From may link; any
	// other module package is a violation (the standard library and
	// third-party modules are not limited). An empty, non-nil list makes
	// From leaves.
	Only []string
	Why  string
}

// rules is the table. Extend it when a package's place in the layering
// matters: a new shipped main, a new leaf, a package the CLI must not grow.
var rules = []rule{
	{
		From:   []string{"cmd/lmnt", "cmd/lmntd"},
		Forbid: []string{"internal/marketsim", "internal/klipper/standin", "internal/democube", "internal/demo", "internal/klipper/bridgetest"},
		Why:    "a printer's binaries carry no simulator, stand-in, demo or test harness: those are development tools (cmd/lmnt-demo, cmd/lmnt-bridgeharness)",
	},
	{
		From: []string{"cmd/lmnt"},
		Forbid: []string{"internal/jobs", "internal/pipeline", "internal/klipper", "internal/marketplace",
			"internal/daemon", "internal/api", "internal/seal", "internal/jobcrypt", "internal/memfd"},
		Why: "the CLI speaks the local API (apitype, apiclient): it links neither the engine, the pipeline, the bridge, the marketplace client, the API server nor the key's sealing",
	},
	{
		From:   []string{"internal/api", "internal/cli", "internal/doctor"},
		Forbid: []string{"internal/jobs"},
		Why:    "the API's types are apitype's; the daemon converts the engine's (internal/daemon/wire.go)",
	},
	{
		From: []string{"internal/jobs"},
		Forbid: []string{"internal/jobs/adapters", "internal/marketplace", "internal/pipeline", "internal/jobcrypt",
			"internal/klipper", "internal/klippercfg", "internal/compat", "internal/config"},
		Why: "the engine knows its ports (Marketplace, Decryptor, Printer, FitCheck) only; what plugs the real parts in lives in internal/jobs/adapters",
	},
	{
		From: []string{"internal/memfd", "internal/jobcrypt", "internal/atomicfile", "internal/textsafe",
			"internal/configparser", "internal/apitype", "internal/apiclient", "internal/version",
			"internal/clock", "internal/backoff", "internal/dirwatch", "internal/jobstatus", "internal/redact",
			"internal/hw"},
		Only: []string{},
		Why:  "leaves: each does one small job on the standard library (and its own third-party modules) alone, so anything may use it",
	},
	{
		From: []string{"internal/clock/clocktest"},
		Only: []string{"internal/clock"},
		Why:  "the tests' fake clock is the clock's, nothing more",
	},
	{
		From: []string{"internal/gcode"},
		Only: []string{"internal/textsafe"},
		Why:  "the G-code gate and metadata parser is a leaf above textsafe only: the pipeline, the CLI's print check and compat all use it",
	},
}

// graph maps an import path to its direct imports.
type graph map[string][]string

// covers reports whether pattern names pkg or a package below it.
func covers(pattern, pkg string) bool {
	return pkg == pattern || strings.HasPrefix(pkg, pattern+"/")
}

// chain is the import path from from to to (breadth first: a shortest one),
// nil when to is not reachable.
func (g graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var c []string
			for ; p != ""; p = prev[p] {
				c = append(c, p)
			}
			slices.Reverse(c)
			return c
		}
		for _, q := range g[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}

// deps is every package from links, itself excluded, sorted.
func (g graph) deps(from string) []string {
	seen := map[string]bool{from: true}
	stack := []string{from}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, q := range g[p] {
			if !seen[q] {
				seen[q] = true
				stack = append(stack, q)
			}
		}
	}
	delete(seen, from)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// check returns one line per broken rule of module mod: which package
// links what it must not, through which imports, and the rule's reason.
func check(mod string, rs []rule, g graph) []string {
	abs := func(p string) string { return mod + "/" + p }
	rel := func(p string) string { return strings.TrimPrefix(p, mod+"/") }
	var out []string
	for _, r := range rs {
		for _, from := range r.From {
			if _, ok := g[abs(from)]; !ok {
				out = append(out, from+": no such package (a rule names it: update the rule with the package)")
				continue
			}
			for _, dep := range g.deps(abs(from)) {
				bad := slices.ContainsFunc(r.Forbid, func(f string) bool { return covers(abs(f), dep) })
				if r.Only != nil && covers(mod, dep) && !slices.ContainsFunc(r.Only, func(o string) bool { return covers(abs(o), dep) }) {
					bad = true
				}
				if bad {
					chain := g.chain(abs(from), dep)
					for i := range chain {
						chain[i] = rel(chain[i])
					}
					out = append(out, from+" links "+rel(dep)+" ("+strings.Join(chain, " → ")+"): "+r.Why)
				}
			}
		}
	}
	return out
}

// load reads the module's import graph as the release builds see it.
func load(t *testing.T) graph {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goBin = p
	}
	cmd := exec.Command(goBin, "list", "-deps", "-json=ImportPath,Imports", module+"/...")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := graph{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		g[p.ImportPath] = p.Imports
	}
	if len(g) < 50 {
		t.Fatalf("go list found only %d packages", len(g))
	}
	return g
}

// TestImportRules applies the rules to the module as it is.
func TestImportRules(t *testing.T) {
	for _, v := range check(module, rules, load(t)) {
		t.Error(v)
	}
}

// TestCheckerOnASyntheticGraph: the checker finds a forbidden package
// reached indirectly, a leaf importing upward, a package below a
// forbidden one and a rule naming a package that does not exist, and
// passes a graph that keeps the rules (the standard library's internal
// packages included).
func TestCheckerOnASyntheticGraph(t *testing.T) {
	rs := []rule{
		{From: []string{"cmd/app"}, Forbid: []string{"internal/sim", "internal/bridge"}, Why: "shipped"},
		{From: []string{"internal/leaf"}, Only: []string{}, Why: "leaf"},
		{From: []string{"internal/gone"}, Forbid: []string{"internal/sim"}, Why: "renamed"},
	}
	const m = "example.com/m"
	clean := graph{
		m + "/cmd/app":      {m + "/internal/cli", "fmt"},
		m + "/internal/cli": {m + "/internal/leaf", "net/http"},
		// The standard library's own internal packages are not the module's.
		m + "/internal/leaf": {"strings", "internal/abi", "golang.org/x/sys/unix"},
		m + "/internal/sim":  {m + "/internal/leaf"},
		m + "/internal/gone": {},
		"fmt":                {}, "net/http": {}, "strings": {}, "internal/abi": {}, "golang.org/x/sys/unix": {},
	}
	if v := check(m, rs, clean); len(v) != 0 {
		t.Fatalf("a graph that keeps the rules: %v", v)
	}

	bad := graph{
		m + "/cmd/app":                 {m + "/internal/cli"},
		m + "/internal/cli":            {m + "/internal/leaf", m + "/internal/demo", m + "/internal/cli/extra"},
		m + "/internal/demo":           {m + "/internal/sim"},
		m + "/internal/sim":            {},
		m + "/internal/leaf":           {m + "/internal/cli"}, // upward, and a cycle
		m + "/internal/bridge/standin": {},
		m + "/internal/cli/extra":      {m + "/internal/bridge/standin"},
	}
	got := strings.Join(check(m, rs, bad), "\n")
	for _, want := range []string{
		"cmd/app links internal/sim (cmd/app → internal/cli → internal/demo → internal/sim): shipped",
		"cmd/app links internal/bridge/standin (cmd/app → internal/cli → internal/cli/extra → internal/bridge/standin): shipped",
		"internal/leaf links internal/cli (internal/leaf → internal/cli): leaf",
		"internal/leaf links internal/sim (internal/leaf → internal/cli → internal/demo → internal/sim): leaf",
		"internal/gone: no such package",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("violations lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "cmd/app links internal/demo") {
		t.Errorf("a package that is not forbidden was reported:\n%s", got)
	}
}
