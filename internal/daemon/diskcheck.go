package daemon

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

// Below this much free space in the state directory the journal may fail
// any moment (a record is a few KiB, written through a temp file).
const (
	stateFreeFail = 1 << 20
	stateFreeWarn = 16 << 20
)

// journalCheck is doctor's view of the job journal: whether the engine can
// write it now, and how much room the state directory's file system has.
func (d *daemon) journalCheck() apitype.Check {
	dir := d.cfg.Load().Paths.StateDirectory
	c := apitype.Check{Name: "job journal", Required: true, Result: apitype.CheckOK}
	fix := "free space on the file system of " + dir + " (df -h " + dir + "); lmntd writes the waiting job updates by itself within a minute, nothing is lost"
	snap, ok := d.snapshot(5 * time.Second)
	switch {
	case !ok:
		c.Result, c.Detail = apitype.CheckFail, "job engine not responding"
		return c
	case snap.JournalProblem != "":
		c.Result, c.Detail, c.Fix = apitype.CheckFail, snap.JournalProblem, fix
		return c
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		c.Result, c.Detail = apitype.CheckWarn, "free space unknown: "+err.Error()
		return c
	}
	free := fs.Bavail * uint64(fs.Bsize)
	c.Detail = fmt.Sprintf("writable; %d MiB free in %s", free>>20, dir)
	switch {
	case free < stateFreeFail:
		c.Result, c.Detail, c.Fix = apitype.CheckFail, fmt.Sprintf("state disk full: %d KiB free in %s", free>>10, dir), fix
	case free < stateFreeWarn:
		c.Result, c.Fix = apitype.CheckWarn, "free space on the file system of "+dir+" before it fills up"
	}
	return c
}
