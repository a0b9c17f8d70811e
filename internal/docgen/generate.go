package docgen

import (
	"fmt"
	"os"
	"path/filepath"
)

// Generate writes man/lmntd.8, man/lmnt.1, completion/lmnt and
// completion/lmntd under dir. files lists the paths the FILES sections
// describe.
func Generate(dir string, p Page, lmnt, lmntd Program, files map[string]string) error {
	dh, err := help(lmntd)
	if err != nil {
		return fmt.Errorf("docgen: lmntd --help: %w", err)
	}
	cmds, top, err := Commands(lmnt)
	if err != nil {
		return err
	}
	out := map[string]string{
		"man/lmntd.8":      Lmntd(dh, files, p),
		"man/lmnt.1":       Lmnt(top, cmds, files, p),
		"completion/lmnt":  BashLmnt(top, cmds),
		"completion/lmntd": BashLmntd(dh),
	}
	for rel, text := range out {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}
