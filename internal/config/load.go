package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	envprovider "github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	gotoml "github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
)

// ConfigFileEnv names the config file, like --config.
const ConfigFileEnv = "LMNTD_CONFIG"

// NonConfigEnv are LMNTD_* variables that are not settings and are therefore
// not reported as unknown: the config file path, and the shared fixture
// directory the test suite uses.
var NonConfigEnv = []string{ConfigFileEnv, "LMNTD_SHARED"}

// Options says where Load reads from. The zero value reads the default file
// and the process environment, without flags.
type Options struct {
	// ConfigFile overrides DefaultConfigFile (--config and LMNTD_CONFIG
	// override this in turn).
	ConfigFile string
	// Environ returns the environment; nil means os.Environ.
	Environ func() []string
	// Flags is the flag set RegisterFlags filled, after Parse; nil means no
	// flags. Only flags the user set override anything.
	Flags *pflag.FlagSet
}

// ConfigPath returns the config file Load reads and whether it was named
// explicitly (a missing explicit file is an error; a missing default is not).
func (o Options) ConfigPath() (path string, explicit bool) {
	if o.Flags != nil {
		if f := o.Flags.Lookup(configFlag); f != nil && f.Changed {
			return f.Value.String(), true
		}
	}
	for _, kv := range o.environ() {
		if v, ok := strings.CutPrefix(kv, ConfigFileEnv+"="); ok && v != "" {
			return v, true
		}
	}
	if o.ConfigFile != "" {
		return o.ConfigFile, true
	}
	return DefaultConfigFile, false
}

func (o Options) environ() []string {
	if o.Environ != nil {
		return o.Environ()
	}
	return os.Environ()
}

// layer is one source's settings, converted to canonical values.
type layer struct {
	values map[string]any
	source map[string]Source
}

func newLayer() *layer { return &layer{values: map[string]any{}, source: map[string]Source{}} }

func (l *layer) set(key string, v any, src Source) {
	l.values[key] = v
	l.source[key] = src
}

// loader collects problems while the layers are read.
type loader struct {
	errs     []error
	notes    []string
	degraded []*FieldError
	// mrOptions are the options present in moonraker.conf's
	// [lmnt_marketplace_plugin], usable or not: evidence of the plugin's era.
	mrOptions map[string]Source
}

// degrade records an imported value lmntd cannot use.
func (ld *loader) degrade(fe *FieldError) { ld.degraded = append(ld.degraded, fe) }

func (ld *loader) fail(src Source, key string, class error, problem, allowed string) {
	ld.errs = append(ld.errs, &FieldError{Source: src, Key: key, Class: class, Problem: problem, Allowed: allowed})
}

// Load builds the configuration from all layers and validates it. On error it
// returns nil and one joined error with every problem found, one per line,
// each a *FieldError.
func Load(opts Options) (*Config, error) {
	ld := &loader{}
	path, explicit := opts.ConfigPath()
	envLayer := ld.readEnv(opts.environ())
	flagLayer := ld.readFlags(opts.Flags)
	// An instance named on the command line or in the environment has its
	// own config file unless one is named.
	if !explicit {
		for _, l := range []*layer{flagLayer, envLayer} {
			if name, ok := l.values["instance"].(string); ok && instanceRE.MatchString(name) {
				path = InstanceConfigFile(name)
				break
			}
		}
	}

	defaults := Defaults()
	base := newLayer()
	for k, v := range defaults.flatten() {
		base.set(k, v, Source{Kind: SourceDefault})
	}
	fileLayer, fileUsed := ld.readFile(path, explicit)
	ld.readDropIns(DropInDir(path), fileLayer)
	// A named instance's defaults keep out of the default instance's way
	// (its paths and sockets); whatever a layer sets still wins.
	for _, l := range []*layer{flagLayer, envLayer, fileLayer} {
		if name, ok := l.values["instance"].(string); ok {
			if instanceRE.MatchString(name) {
				for k, v := range InstanceDefaults(name) {
					base.set(k, v, Source{Kind: SourceDefault})
				}
			}
			break
		}
	}

	// Where moonraker.conf is, and whether to read it, may itself be set by
	// any layer but the import.
	upper := []*layer{base, fileLayer, envLayer, flagLayer}
	lookup := func(key string) any {
		for i := len(upper) - 1; i >= 0; i-- {
			if v, ok := upper[i].values[key]; ok {
				return v
			}
		}
		return nil
	}
	var mrLayer *layer
	probe := Config{Migration: Migration{
		ImportMoonraker: lookup("migration.import_moonraker").(bool),
		MoonrakerConf:   lookup("migration.moonraker_conf").(string),
	}, Klipper: Klipper{ConfigFile: lookup("klipper.config_file").(string)}}
	if mrPath := probe.MoonrakerConfPath(); mrPath != "" {
		mrLayer = ld.readMoonraker(mrPath, fileLayer)
	} else {
		mrLayer = newLayer()
	}

	// An imported value lmntd cannot use never stops the daemon: it is
	// dropped (the value below it stays in effect) and reported as
	// degraded, naming the moonraker.conf line, option and key.
	cfg, errs := ld.build(base, fileLayer, mrLayer, envLayer, flagLayer, path, fileUsed)
	if cfg == nil {
		return nil, errs[0]
	}
	if dropped := dropImportErrors(errs, mrLayer, ld); dropped {
		if cfg, errs = ld.build(base, fileLayer, mrLayer, envLayer, flagLayer, path, fileUsed); cfg == nil {
			return nil, errs[0]
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// dropImportErrors moves every problem of an imported value out of errs
// into the loader's degraded list and removes the value from mr. It
// reports whether there was any (the layers must then be merged again).
func dropImportErrors(errs []error, mr *layer, ld *loader) bool {
	dropped := false
	for _, e := range errs {
		fe, ok := e.(*FieldError)
		if !ok || fe.Source.Kind != SourceMoonraker {
			continue
		}
		ld.degrade(fe)
		delete(mr.values, fe.Key)
		delete(mr.source, fe.Key)
		dropped = true
	}
	return dropped
}

// build merges the layers, decodes and validates them. A nil Config means a
// bug (errs holds it); otherwise errs are the problems found.
func (ld *loader) build(base, fileLayer, mrLayer, envLayer, flagLayer *layer, path string, fileUsed bool) (*Config, []error) {
	// Merge with koanf, lowest first.
	k := koanf.New(".")
	origins := map[string]Source{}
	for _, l := range []*layer{base, fileLayer, mrLayer, envLayer, flagLayer} {
		if err := k.Load(confmap.Provider(l.values, "."), nil); err != nil {
			return nil, []error{fmt.Errorf("config: merging layers: %w", err)}
		}
		for key, src := range l.source {
			origins[key] = src
		}
	}
	// Values that failed to convert were left out of their layer, so the
	// rest can still be decoded and validated: all problems are reported at once.
	cfg := &Config{}
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.TextUnmarshallerHookFunc()),
		ErrorUnused: true,
		Result:      cfg,
	}
	if err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc}); err != nil {
		// Every value was converted and checked above; this is a bug.
		return nil, []error{fmt.Errorf("config: decoding checked values: %w", err)}
	}
	cfg.origins = origins
	cfg.profile = decideProfile(cfg, ld.mrOptions)
	if cfg.Marketplace.URL == "" {
		cfg.Marketplace.URL = DefaultCurrentURL
		if cfg.profile.Profile == ProfileLegacy {
			cfg.Marketplace.URL = DefaultLegacyURL
		}
		cfg.origins["marketplace.url"] = Source{Kind: SourceDefault, Name: "api_profile " + orAuto(cfg.profile.Profile)}
	}
	if fileUsed {
		cfg.file = path
	}
	for key, src := range origins {
		if src.Kind == SourceMoonraker {
			cfg.imports = append(cfg.imports, Import{Key: key, Source: src, Value: display(mrLayer.values[key])})
		}
	}
	sort.Slice(cfg.imports, func(i, j int) bool { return cfg.imports[i].Key < cfg.imports[j].Key })
	cfg.notes = ld.notes
	cfg.degraded = append(ld.degraded, cfg.dropLoopbackTrust()...)
	return cfg, append(append([]error(nil), ld.errs...), cfg.validate()...)
}

func orAuto(p string) string {
	if p == "" {
		return ProfileAuto
	}
	return p
}

// Marketplace hosts of each era, for api_profile "auto".
var (
	currentHosts = []string{"api.lmnt.co", "dev-api.lmnt.co", "printers.lmnt.co"}
	legacyHosts  = []string{"api.lmnt.market"}
)

// decideProfile resolves api_profile "auto" from what is conclusive: the
// marketplace URL's host when it is a known LMNT host of one era; the old
// plugin's options, usable or not (cws_url exists only in the seed era's
// moonraker.conf; firebase_project_id and check_interval 0 only in the
// current one); no URL at all (the current default). Anything else needs a
// probe.
func decideProfile(c *Config, mrOptions map[string]Source) ProfileDecision {
	if c.APIProfile != ProfileAuto {
		return ProfileDecision{Profile: c.APIProfile, Reason: "api_profile = " + c.APIProfile}
	}
	if u, err := url.Parse(c.Marketplace.URL); err == nil {
		h := strings.ToLower(u.Hostname())
		switch {
		case slices.Contains(currentHosts, h):
			return ProfileDecision{Profile: ProfileCurrent, Reason: "auto: " + h + " is a current-era marketplace host"}
		case slices.Contains(legacyHosts, h):
			return ProfileDecision{Profile: ProfileLegacy, Reason: "auto: " + h + " is the legacy marketplace host"}
		}
	}
	if src, ok := mrOptions["cws_url"]; ok {
		return ProfileDecision{Profile: ProfileLegacy, Reason: "auto: " + src.String() + " exists only in the seed era's moonraker.conf"}
	}
	if src, ok := mrOptions["firebase_project_id"]; ok {
		return ProfileDecision{Profile: ProfileCurrent, Reason: "auto: " + src.String() + " exists only in the current plugin's moonraker.conf"}
	}
	if src, ok := mrOptions["check_interval"]; ok && c.Marketplace.CheckInterval == 0 && c.Origin("marketplace.check_interval") == src {
		return ProfileDecision{Profile: ProfileCurrent, Reason: "auto: " + src.String() + " = 0 (push only) is the current plugin's setting"}
	}
	if c.Marketplace.URL == "" {
		return ProfileDecision{Profile: ProfileCurrent, Reason: "auto: no marketplace URL set, the current marketplace is the default"}
	}
	return ProfileDecision{Reason: "auto: nothing in the settings tells the era of " + c.Marketplace.URL + "; one probe at start decides"}
}

// DropInDir is the directory of drop-ins read after the config file at path:
// path + ".d", e.g. /etc/lmntd/lmntd.toml.d. The packaged lmntd.toml is a
// dpkg conffile that belongs to the owner; `lmnt setup` and image builders
// write their settings there instead, so an upgrade that ships a changed
// lmntd.toml never stops at dpkg's conffile prompt.
func DropInDir(path string) string { return path + ".d" }

// readDropIns loads every *.toml in dir in lexical order (10-image.toml
// before 50-setup.toml) on top of the config file's layer: a later file
// overrides an earlier one key by key. A missing directory is normal.
func (ld *loader) readDropIns(dir string, l *layer) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		ld.fail(Source{Kind: SourceFile, Name: dir}, "", ErrUnreadableFile, "cannot read the drop-in directory: "+err.Error(),
			"a readable directory of *.toml files")
		return
	}
	for _, e := range entries { // os.ReadDir sorts by name
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".toml") || strings.HasPrefix(e.Name(), ".") {
			continue // editors' backups, dpkg's and our own temporary files
		}
		ld.loadTOML(filepath.Join(dir, e.Name()), true, l)
	}
}

// readFile loads the TOML file through koanf. A missing file is an error only
// when it was named explicitly.
func (ld *loader) readFile(path string, explicit bool) (*layer, bool) {
	l := newLayer()
	return l, ld.loadTOML(path, explicit, l)
}

// loadTOML reads one TOML file into l and reports whether it was read.
func (ld *loader) loadTOML(path string, explicit bool, l *layer) bool {
	src := Source{Kind: SourceFile, Name: path}
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), toml.Parser()); err != nil {
		var pathErr *fs.PathError
		var decodeErr *gotoml.DecodeError
		var strictErr *gotoml.StrictMissingError
		switch {
		case errors.Is(err, fs.ErrNotExist) && !explicit:
			ld.notes = append(ld.notes, fmt.Sprintf("%s does not exist; using built-in defaults", path))
			return false
		case errors.As(err, &pathErr):
			ld.fail(src, "", ErrUnreadableFile, "cannot read the config file: "+pathErr.Err.Error(),
				"a readable TOML file; name another with --config or "+ConfigFileEnv)
		case errors.As(err, &decodeErr):
			row, col := decodeErr.Position()
			ld.fail(Source{Kind: SourceFile, Name: fmt.Sprintf("%s:%d:%d", path, row, col)}, "", ErrSyntax,
				"TOML syntax error: "+decodeErr.Error(), "")
		case errors.As(err, &strictErr):
			ld.fail(src, "", ErrSyntax, "TOML error: "+strictErr.Error(), "")
		default:
			ld.fail(src, "", ErrSyntax, "TOML error: "+err.Error(), "")
		}
		return false
	}
	ld.convertAll(k.All(), l, func(string) Source { return src }, false)
	return true
}

// convertAll checks and converts every key of a flattened koanf map into l.
func (ld *loader) convertAll(flat map[string]any, l *layer, srcOf func(key string) Source, textual bool) {
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		raw := flat[key]
		src := srcOf(key)
		if m, ok := raw.(map[string]any); ok && len(m) == 0 && sectionNames[key] {
			continue // an empty [section]
		}
		if secretKey(key) {
			ld.fail(src, key, ErrSecretInConfig, "secrets are never kept in the configuration", secretHint)
			continue
		}
		f, ok := schemaByKey[key]
		if !ok {
			ld.fail(src, key, ErrUnknownKey, "not a setting of lmntd"+suggest(key), "the keys listed in "+DefaultConfigFile)
			continue
		}
		v, problem := convert(f, raw, textual)
		if problem != "" {
			ld.fail(src, key, ErrWrongType, problem, f.kind.want())
			continue
		}
		l.set(key, v, src)
	}
}

// readEnv reads LMNTD_* variables through koanf's env provider.
func (ld *loader) readEnv(environ []string) *layer {
	l := newLayer()
	byEnv := map[string]string{}
	for _, f := range schema {
		byEnv[EnvName(f.key)] = f.key
	}
	ignored := map[string]bool{}
	for _, n := range NonConfigEnv {
		ignored[n] = true
	}
	keyEnv := map[string]string{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "LMNTD_") || ignored[name] {
			continue
		}
		src := Source{Kind: SourceEnv, Name: name}
		if key, ok := byEnv[name]; ok {
			keyEnv[key] = name
			continue
		}
		guess := strings.ToLower(strings.TrimPrefix(name, "LMNTD_"))
		if secretKey(guess) {
			ld.fail(src, "", ErrSecretInConfig, "secrets are never passed in the environment (other processes can read it)", secretHint)
			continue
		}
		ld.fail(src, "", ErrUnknownKey, "not an lmntd setting", "LMNTD_<SECTION>_<KEY> for a key of "+DefaultConfigFile+", e.g. LMNTD_MARKETPLACE_CHECK_INTERVAL")
	}
	k := koanf.New(".")
	err := k.Load(envprovider.Provider(".", envprovider.Opt{
		Prefix:      "LMNTD_",
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			return byEnv[name], value // unknown names become "" and are dropped
		},
	}), nil)
	if err != nil {
		ld.fail(Source{Kind: SourceEnv}, "", ErrInvalidValue, err.Error(), "")
		return l
	}
	ld.convertAll(k.All(), l, func(key string) Source { return Source{Kind: SourceEnv, Name: keyEnv[key]} }, true)
	return l
}

// readFlags reads the flags the user set, through koanf's posflag provider.
func (ld *loader) readFlags(fs *pflag.FlagSet) *layer {
	l := newLayer()
	if fs == nil {
		return l
	}
	byFlag := map[string]string{}
	for _, f := range schema {
		byFlag[FlagName(f.key)] = f.key
	}
	k := koanf.New(".")
	err := k.Load(posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		return byFlag[f.Name], f.Value.String() // flags that are not settings are dropped
	}), nil)
	if err != nil {
		ld.fail(Source{Kind: SourceFlag}, "", ErrInvalidValue, err.Error(), "")
		return l
	}
	ld.convertAll(k.All(), l, func(key string) Source { return Source{Kind: SourceFlag, Name: "--" + FlagName(key)} }, true)
	return l
}

// readMoonraker imports the old plugin's settings that lmntd.toml does not set.
func (ld *loader) readMoonraker(path string, fileLayer *layer) *layer {
	l := newLayer()
	fileSrc := Source{Kind: SourceMoonraker, Name: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l
	}
	if err != nil {
		var pathErr *fs.PathError
		msg := err.Error()
		if errors.As(err, &pathErr) {
			msg = pathErr.Err.Error()
		}
		ld.degrade(&FieldError{Source: fileSrc, Key: "migration.moonraker_conf", Class: ErrUnreadableFile,
			Problem: "cannot read moonraker.conf to import the old plugin's settings (nothing imported): " + msg,
			Allowed: "a readable file, or migration.import_moonraker = false"})
		return l
	}
	sections, _, err := parseMoonrakerConf(data)
	if err != nil {
		src := fileSrc
		var se *iniSyntaxError
		if errors.As(err, &se) {
			src.Line = se.Line
			err = errors.New(se.Msg)
		}
		ld.degrade(&FieldError{Source: src, Class: ErrSyntax, Problem: "moonraker.conf syntax error (nothing imported): " + err.Error(),
			Allowed: "fix the file, or migration.import_moonraker = false"})
		return l
	}
	sec, ok := sections[moonrakerSection]
	if !ok {
		return l
	}
	ld.mrOptions = map[string]Source{}
	for name, opt := range sec.Options {
		ld.mrOptions[name] = Source{Kind: SourceMoonraker, Name: path, Line: opt.Line, Option: name}
	}
	known := map[string]bool{}
	for _, imp := range moonrakerImports {
		known[imp.option] = true
		opt, ok := sec.Options[imp.option]
		if !ok {
			continue
		}
		src := Source{Kind: SourceMoonraker, Name: path, Line: opt.Line, Option: imp.option}
		if _, set := fileLayer.values[imp.key]; set {
			ld.notes = append(ld.notes, fmt.Sprintf("%s: not imported, %s is set in the config file", src, imp.key))
			continue
		}
		text, use, note, err := imp.convert(opt.Value)
		if err != nil {
			ld.degrade(&FieldError{Source: src, Key: imp.key, Class: ErrWrongType, Problem: err.Error() + "; not imported",
				Allowed: "set " + imp.key + " in lmntd.toml to override"})
			continue
		}
		if note != "" {
			ld.notes = append(ld.notes, fmt.Sprintf("%s: %s", src, note))
		}
		if !use {
			continue
		}
		v, problem := convert(schemaByKey[imp.key], text, true)
		if problem != "" {
			ld.degrade(&FieldError{Source: src, Key: imp.key, Class: ErrWrongType, Problem: problem + "; not imported",
				Allowed: schemaByKey[imp.key].kind.want()})
			continue
		}
		l.set(imp.key, v, src)
	}
	names := make([]string, 0, len(sec.Options))
	for name := range sec.Options {
		if !known[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		ld.notes = append(ld.notes, fmt.Sprintf("%s:%d: [%s] %s is not used by lmntd", path, sec.Options[name].Line, moonrakerSection, name))
	}
	return l
}

// convert checks one raw value against its field's kind and returns the
// canonical value, or a problem description. textual values (environment,
// flags, moonraker.conf) are strings to be parsed; TOML values have types.
func convert(f *field, raw any, textual bool) (any, string) {
	describe := func() string { return describeRaw(raw) }
	switch f.kind {
	case kindString:
		if s, ok := raw.(string); ok {
			return strings.TrimSpace(s), ""
		}
	case kindBool:
		switch x := raw.(type) {
		case bool:
			return x, ""
		case string:
			if textual {
				if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
					return b, ""
				}
			}
		}
	case kindDuration:
		if s, ok := raw.(string); ok {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Sprintf("%q is not a duration", s)
			}
			return d.String(), ""
		}
	case kindSize:
		switch x := raw.(type) {
		case string:
			b, err := ParseByteSize(x)
			if err != nil {
				return nil, fmt.Sprintf("%q is not a size", x)
			}
			return b.String(), ""
		case int64:
			if x >= 0 {
				return ByteSize(x).String(), ""
			}
		}
	case kindPrefixes:
		items, problem, ok := stringItems(raw, textual)
		if !ok {
			break
		}
		if problem != "" {
			return nil, problem
		}
		out := make([]string, 0, len(items))
		for _, s := range items {
			p, err := parsePrefix(s)
			if err != nil {
				return nil, fmt.Sprintf("%q is not an IP address or CIDR", s)
			}
			out = append(out, p.String())
		}
		return out, ""
	case kindInt:
		switch x := raw.(type) {
		case int64:
			if x >= math.MinInt32 && x <= math.MaxInt32 {
				return int(x), ""
			}
			return nil, fmt.Sprintf("%d is out of range", x)
		case string:
			if textual {
				n, err := strconv.Atoi(strings.TrimSpace(x))
				if err != nil {
					return nil, fmt.Sprintf("%q is not an integer", x)
				}
				return n, ""
			}
		}
	case kindInts:
		items, ok := listItems(raw, textual)
		if !ok {
			break
		}
		out := make([]int, 0, len(items))
		for _, it := range items {
			switch x := it.(type) {
			case int64:
				if x < math.MinInt32 || x > math.MaxInt32 {
					return nil, fmt.Sprintf("%d is out of range", x)
				}
				out = append(out, int(x))
			case string:
				n, err := strconv.Atoi(strings.TrimSpace(x))
				if err != nil {
					return nil, fmt.Sprintf("%q is not an integer", x)
				}
				out = append(out, n)
			default:
				return nil, fmt.Sprintf("list element %s is not an integer", describeRaw(it))
			}
		}
		return out, ""
	case kindStrings:
		items, problem, ok := stringItems(raw, textual)
		if !ok {
			break
		}
		if problem != "" {
			return nil, problem
		}
		for i := range items {
			items[i] = strings.TrimSpace(items[i])
		}
		return items, ""
	}
	return nil, "got " + describe()
}

// stringItems is a list of strings (see listItems); problem names an
// element that is not a string.
func stringItems(raw any, textual bool) (items []string, problem string, ok bool) {
	list, ok := listItems(raw, textual)
	if !ok {
		return nil, "", false
	}
	items = make([]string, 0, len(list))
	for _, it := range list {
		s, isString := it.(string)
		if !isString {
			return nil, fmt.Sprintf("list element %s is not a string", describeRaw(it)), true
		}
		items = append(items, s)
	}
	return items, "", true
}

// listItems returns a TOML array's elements, or splits textual values at
// commas (an empty string is an empty list).
func listItems(raw any, textual bool) ([]any, bool) {
	switch x := raw.(type) {
	case []any:
		return x, true
	case string:
		if !textual {
			return nil, false
		}
		var out []any
		for _, p := range strings.Split(x, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, true
	}
	return nil, false
}

// parsePrefix reads a CIDR, or a bare address as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func describeRaw(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%s %v", reflect.TypeOf(v), v)
}

// secretHint says where secrets belong instead.
const secretHint = "no secrets in configuration: the printer key and token are kept sealed in paths.state_directory " +
	"(lmnt pair, or lmnt keys import-legacy); an API key goes in the file named by api.api_key_file"

// secretKey reports whether a key's name says it holds a secret.
func secretKey(key string) bool {
	last := key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		last = key[i+1:]
	}
	if strings.HasSuffix(last, "_file") || strings.HasSuffix(last, "_path") {
		return false // a path to a secret is what we want
	}
	if strings.HasSuffix(last, "_hosts") {
		return false // where a secret may go (marketplace.token_hosts), not the secret
	}
	switch last {
	case "key", "api_key", "apikey", "dek", "psek", "kek":
		return true
	}
	for _, word := range []string{"token", "password", "passwd", "secret", "private_key", "privatekey", "jwt", "passphrase", "credential"} {
		if strings.Contains(last, word) {
			return true
		}
	}
	return false
}

// suggest names a known key close to an unknown one.
func suggest(key string) string {
	last := key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		last = key[i+1:]
	}
	if sectionNames[key] {
		return fmt.Sprintf(" (%s is a [section], not a value)", key)
	}
	for _, f := range schema {
		if strings.HasSuffix(f.key, "."+last) || f.key == last {
			return fmt.Sprintf(" (did you mean %s?)", f.key)
		}
	}
	return ""
}
