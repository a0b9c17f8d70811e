package api

import (
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/compat"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// CompatibilityCheck is doctor's "job compatibility" line, the same whether
// the daemon or the CLI (daemon down) runs doctor: what each job is compared
// with before it prints, and what cannot be. Unknowns never block a job, so
// they are listed, not warned about (a delta printer or an unset filament
// type is a normal setup).
func CompatibilityCheck(printer klippercfg.Printer, filamentType string) Check {
	c := Check{Name: "job compatibility", Result: CheckOK,
		Detail: "each job's nozzle, size (Z; X/Y when the file states its extents) and filament are checked against printer.cfg before it prints"}
	if gaps := compat.Coverage(printer, compat.Options{FilamentType: filamentType}); len(gaps) > 0 {
		parts := make([]string, len(gaps))
		for i, g := range gaps {
			parts[i] = g.String()
		}
		c.Detail += "; not checked: " + strings.Join(parts, "; ")
	}
	return c
}
