package setup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Instance is one Klipper installation on the host. Paths are host paths
// (as Klipper sees them), not joined with Options.Root.
type Instance struct {
	// Name is the systemd unit without ".service" ("klipper",
	// "klipper-printer_1"), or "printer_data" style directory name when
	// no unit was found.
	Name string
	// Unit is the unit file Klipper runs from ("" when not found).
	Unit string
	// User is Klipper's service user, UID and GID its ids from /etc/passwd.
	User     string
	UID, GID int
	Home     string
	// ConfigFile is printer.cfg; ConfigDir its directory.
	ConfigFile string
	ConfigDir  string
	// DataDir is the printer_data directory (parent of config/), "" for
	// old layouts without one.
	DataDir string
	// ExtrasDir is klippy/extras of the Klipper (or Kalico) checkout.
	ExtrasDir string
}

// MoonrakerASVC is Moonraker's list of services it may manage, "" when the
// instance has no printer_data directory.
func (in Instance) MoonrakerASVC() string {
	if in.DataDir == "" {
		return ""
	}
	return path.Join(in.DataDir, "moonraker.asvc")
}

// LegacyDir is where the old Python plugin kept its key and token.
func (in Instance) LegacyDir() string {
	if in.DataDir == "" {
		return path.Join(in.Home, "printer_data", "lmnt_marketplace")
	}
	return path.Join(in.DataDir, "lmnt_marketplace")
}

func (in Instance) String() string {
	return fmt.Sprintf("%s (user %s, %s)", in.Name, in.User, in.ConfigFile)
}

// account is one /etc/passwd entry.
type account struct {
	Name     string
	UID, GID int
	Home     string
}

// readPasswd parses <root>/etc/passwd; lookups go through the file, not NSS,
// so a fixture tree describes its own users.
func readPasswd(root string) (map[string]account, error) {
	f, err := os.Open(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		return nil, fmt.Errorf("setup: reading the user database: %w", err)
	}
	defer f.Close()
	users := map[string]account{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil {
			continue
		}
		users[fields[0]] = account{Name: fields[0], UID: uid, GID: gid, Home: fields[5]}
	}
	return users, sc.Err()
}

// unitDirs are searched in systemd's precedence order: /etc overrides /lib.
var unitDirs = []string{"etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"}

// unitSettings are the parts of a Klipper unit setup needs.
type unitSettings struct {
	User      string
	ExecStart string
	Env       map[string]string
	EnvFiles  []string
}

// readUnit reads a unit file and its drop-ins (later assignments win, an
// empty ExecStart= resets).
func readUnit(root, file string) (unitSettings, error) {
	u := unitSettings{Env: map[string]string{}}
	files := []string{file}
	base := filepath.Base(file)
	for _, d := range unitDirs {
		matches, _ := filepath.Glob(filepath.Join(root, d, base+".d", "*.conf"))
		files = append(files, matches...)
	}
	sort.SliceStable(files[1:], func(i, j int) bool { return filepath.Base(files[1+i]) < filepath.Base(files[1+j]) })
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return u, err
		}
		section := ""
		for _, line := range joinContinuations(string(data)) {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' || line[0] == ';' {
				continue
			}
			if line[0] == '[' {
				section = strings.Trim(line, "[]")
				continue
			}
			if section != "Service" {
				continue
			}
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key, value = strings.TrimSpace(key), strings.TrimSpace(value)
			switch key {
			case "User":
				u.User = value
			case "ExecStart":
				u.ExecStart = value
			case "Environment":
				for _, w := range splitWords(value) {
					if k, v, ok := strings.Cut(w, "="); ok {
						u.Env[k] = v
					}
				}
			case "EnvironmentFile":
				if value == "" {
					u.EnvFiles = nil
				} else {
					u.EnvFiles = append(u.EnvFiles, value)
				}
			}
		}
	}
	return u, nil
}

func joinContinuations(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

// splitWords splits on white space, honouring double and single quotes.
func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// readEnvFile parses KEY=VALUE lines (systemd's EnvironmentFile= syntax,
// quotes removed).
func readEnvFile(path string, env map[string]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range joinContinuations(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return nil
}

// expandEnv replaces $VAR and ${VAR} as systemd does in ExecStart=.
func expandEnv(s string, env map[string]string) string {
	return os.Expand(s, func(k string) string { return env[k] })
}

// klippyValueFlags are klippy.py's options that take a value.
var klippyValueFlags = map[string]bool{"-i": true, "-I": true, "-a": true, "-l": true, "-o": true, "-d": true,
	"--input-tty": true, "--api-server": true, "--logfile": true, "--debuginput": true, "--debugoutput": true, "--dictionary": true}

// parseKlippyCommand finds klippy.py and the config file in a Klipper command line.
func parseKlippyCommand(args []string) (klippyDir, config string, ok bool) {
	for i, a := range args {
		if path.Base(a) != "klippy.py" {
			continue
		}
		klippyDir = path.Dir(a)
		for j := i + 1; j < len(args); j++ {
			arg := args[j]
			if klippyValueFlags[arg] {
				j++
				continue
			}
			if strings.HasPrefix(arg, "-") {
				continue
			}
			return klippyDir, arg, true
		}
		return klippyDir, "", true
	}
	return "", "", false
}

// ErrNoKlipper means no Klipper installation was found.
var ErrNoKlipper = errors.New("setup: no Klipper installation found")

// Detect lists the Klipper instances on the host at root: every
// klipper*.service whose command runs klippy.py (KIAUH names several
// instances klipper-<name>.service; MainsailOS and BTT images have one
// klipper.service), else printer_data directories in home directories.
func Detect(root string) ([]Instance, []string, error) {
	var notes []string
	users, err := readPasswd(root)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var found []Instance
	for _, d := range unitDirs {
		matches, _ := filepath.Glob(filepath.Join(root, d, "klipper*.service"))
		sort.Strings(matches)
		for _, m := range matches {
			name := strings.TrimSuffix(filepath.Base(m), ".service")
			if seen[name] {
				continue // an /etc unit overrides the packaged one
			}
			seen[name] = true
			in, note, err := instanceFromUnit(root, m, users)
			if note != "" {
				notes = append(notes, note)
			}
			if err != nil {
				return nil, notes, err
			}
			if in != nil {
				found = append(found, *in)
			}
		}
	}
	if len(found) > 0 {
		return found, notes, nil
	}
	// No unit: look for printer_data directories (custom service managers,
	// or an image whose units are not installed yet).
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		acct := users[n]
		if acct.UID < 1000 || acct.UID >= 65534 || acct.Home == "" || acct.Home == "/" {
			continue
		}
		dirs, _ := filepath.Glob(filepath.Join(root, acct.Home, "printer*_data", "config", "printer.cfg"))
		sort.Strings(dirs)
		for _, cfg := range dirs {
			hostCfg := "/" + strings.TrimPrefix(strings.TrimPrefix(cfg, root), "/")
			in := Instance{Name: path.Base(path.Dir(path.Dir(hostCfg))), User: n, UID: acct.UID, GID: acct.GID, Home: acct.Home,
				ConfigFile: hostCfg}
			in.fill(root)
			in.ExtrasDir = findExtras(root, acct.Home)
			found = append(found, in)
		}
	}
	if len(found) == 0 {
		return nil, notes, fmt.Errorf("%w: no klipper*.service unit running klippy.py and no ~/printer_data/config/printer.cfg; "+
			"name it with --config (and --klipper-user, --extras)", ErrNoKlipper)
	}
	return found, notes, nil
}

func instanceFromUnit(root, file string, users map[string]account) (*Instance, string, error) {
	u, err := readUnit(root, file)
	if err != nil {
		return nil, "", fmt.Errorf("setup: reading %s: %w", file, err)
	}
	for _, ef := range u.EnvFiles {
		optional := strings.HasPrefix(ef, "-")
		ef = strings.TrimPrefix(ef, "-")
		if err := readEnvFile(filepath.Join(root, ef), u.Env); err != nil && !(optional && errors.Is(err, fs.ErrNotExist)) {
			return nil, "", fmt.Errorf("setup: %s: EnvironmentFile %s: %w", file, ef, err)
		}
	}
	cmd := strings.TrimLeft(u.ExecStart, "-@:+!")
	args := splitWords(expandEnv(cmd, u.Env))
	klippyDir, config, ok := parseKlippyCommand(args)
	unitName := strings.TrimSuffix(filepath.Base(file), ".service")
	hostUnit := "/" + strings.TrimPrefix(strings.TrimPrefix(file, root), "/")
	if !ok {
		// klipper-mcu.service, KlipperScreen.service and friends.
		return nil, "", nil
	}
	user := u.User
	if user == "" {
		user = "root"
	}
	acct, known := users[user]
	if !known {
		return nil, "", fmt.Errorf("setup: %s runs Klipper as %q, who is not in /etc/passwd", hostUnit, user)
	}
	if config == "" {
		return nil, fmt.Sprintf("%s: klippy.py has no config file argument; skipped", hostUnit), nil
	}
	if strings.HasPrefix(config, "~/") {
		config = path.Join(acct.Home, config[2:])
	}
	in := Instance{Name: unitName, Unit: hostUnit, User: user, UID: acct.UID, GID: acct.GID, Home: acct.Home,
		ConfigFile: path.Clean(config), ExtrasDir: path.Join(klippyDir, "extras")}
	in.fill(root)
	note := ""
	if user == "root" {
		note = fmt.Sprintf("%s runs Klipper as root: lmntd will accept the bridge only from uid 0", hostUnit)
	}
	return &in, note, nil
}

func (in *Instance) fill(root string) {
	in.ConfigDir = path.Dir(in.ConfigFile)
	if path.Base(in.ConfigDir) == "config" {
		in.DataDir = path.Dir(in.ConfigDir)
	}
}

// findExtras guesses klippy/extras in a home directory (KIAUH and MainsailOS
// clone ~/klipper; Kalico installs clone ~/kalico).
func findExtras(root, home string) string {
	for _, dir := range []string{"klipper", "kalico"} {
		p := path.Join(home, dir, "klippy", "extras")
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.IsDir() {
			return p
		}
	}
	return ""
}
