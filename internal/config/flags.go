package config

import (
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// configFlag names the config file on the command line.
const configFlag = "config"

// RegisterFlags adds --config and one flag per setting (named by FlagName,
// e.g. --marketplace-check-interval) to fs. Lists are comma-separated. Load
// applies only the flags the user actually set.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.String(configFlag, DefaultConfigFile, "configuration file (also "+ConfigFileEnv+")")
	defaults := Defaults()
	flat := defaults.flatten()
	for _, f := range schema {
		name := FlagName(f.key)
		usage := f.doc + " [" + f.key + "]"
		switch v := flat[f.key].(type) {
		case bool:
			fs.Bool(name, v, usage)
		case string:
			fs.String(name, v, usage)
		case []string:
			fs.String(name, strings.Join(v, ","), usage)
		case []int:
			parts := make([]string, len(v))
			for i, n := range v {
				parts[i] = strconv.Itoa(n)
			}
			fs.String(name, strings.Join(parts, ","), usage)
		}
	}
}
