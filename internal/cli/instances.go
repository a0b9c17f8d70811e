package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/lmnt-marketplace/lmntd/internal/apiclient"
	"github.com/lmnt-marketplace/lmntd/internal/config"
)

// DefaultRuntimeDir holds the default instance's API socket and one
// directory per further instance (lmntd@NAME: /run/lmntd/NAME/api.sock).
const DefaultRuntimeDir = "/run/lmntd"

// instanceSocket is the API socket of instance name below runDir ("" is
// the default instance).
func instanceSocket(runDir, name string) string {
	if name == "" {
		return filepath.Join(runDir, "api.sock")
	}
	return filepath.Join(runDir, name, "api.sock")
}

// instances lists the lmntd instances whose API socket exists below
// runDir: "" for the default instance first, then the named ones in order.
func instances(runDir string) []string {
	var out []string
	if isSocket(instanceSocket(runDir, "")) {
		out = append(out, "")
	}
	entries, _ := os.ReadDir(runDir)
	var named []string
	for _, e := range entries {
		if e.IsDir() && config.CheckInstanceName(e.Name()) == nil && isSocket(instanceSocket(runDir, e.Name())) {
			named = append(named, e.Name())
		}
	}
	sort.Strings(named)
	return append(out, named...)
}

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// instanceFlag is a command's --instance: it points the command at that
// instance's socket as soon as it is parsed.
type instanceFlag struct{ e *env }

func (f instanceFlag) String() string { return "" }
func (f instanceFlag) Type() string   { return "NAME" }

func (f instanceFlag) Set(name string) error {
	if err := config.CheckInstanceName(name); err != nil {
		return err
	}
	if f.e.socketSet {
		return fmt.Errorf("--socket (or LMNT_SOCKET) already names the socket")
	}
	f.e.c = apiclient.New(instanceSocket(f.e.runDir, name), f.e.c.Timeout())
	f.e.instanceChosen = true
	return nil
}

// statusAll shows every instance's status, one after the other (--json: a
// list of {"instance", "status"}); an instance that does not answer is
// shown with the reason and makes the exit status 1.
func (e *env) statusAll(names []string, asJSON bool) (int, error) {
	code := 0
	type entry struct {
		Instance string          `json:"instance"`
		Status   json.RawMessage `json:"status,omitempty"`
		Error    string          `json:"error,omitempty"`
	}
	var all []entry
	for i, name := range names {
		sub := *e
		sub.c = apiclient.New(instanceSocket(e.runDir, name), e.c.Timeout())
		if asJSON {
			var raw json.RawMessage
			en := entry{Instance: name}
			if err := sub.c.Get(e.ctx, "/lmnt/v1/status", &raw); err != nil {
				en.Error, code = err.Error(), 1
			} else {
				en.Status = raw
			}
			all = append(all, en)
			continue
		}
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		if name == "" {
			fmt.Fprintln(e.stdout, "instance (default): lmntd.service")
		} else {
			fmt.Fprintf(e.stdout, "instance %s: lmntd@%s.service (lmnt --instance %s …)\n", name, name, name)
		}
		if _, err := sub.statusOne(false, false); err != nil {
			fmt.Fprintf(e.stdout, "  not answering: %v\n", err)
			code = 1
		}
	}
	if asJSON {
		return code, e.printJSON(all)
	}
	return code, nil
}
