package daemon

import (
	"errors"
	"io/fs"
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/mdstub"
)

// stubStore is where the jobs' metadata stubs go, or nil when they are off
// or the folder `lmnt setup` creates is missing. With stubs off, stubs a
// run with them on left are removed: the owner wants nothing derived from
// a job on disk.
func (d *daemon) stubStore(cfg *config.Config) jobs.StubStore {
	dir := mdstub.Dir{Gcodes: cfg.Klipper.GcodesDir}
	if !cfg.Klipper.MetadataStub {
		if removed, err := dir.Clean(nil); err != nil {
			d.log.Warn("removing metadata stubs (metadata_stub = false)", "err", err)
		} else if len(removed) > 0 {
			d.log.Info("removed metadata stubs (metadata_stub = false)", "stubs", removed)
		}
		return nil
	}
	if st, err := os.Stat(dir.Path()); err != nil || !st.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("metadata stubs off: their folder is missing; run lmnt setup", "folder", dir.Path())
		} else {
			d.log.Warn("metadata stubs off", "folder", dir.Path(), "err", err)
		}
		return nil
	}
	return dir
}

// publishKlipperState tells the Klipper extras what Mainsail's object view
// and macros show about lmntd (printer["encrypted_file_bridge"]): the
// pairing code while pairing, whether a job waits for LMNT_READY, the job
// being worked on. The bridge sends it only when it changed.
func (d *daemon) publishKlipperState(snap jobs.Snapshot) {
	var st klipper.DaemonState
	if _, paired := d.mkt.Load().Token(); !paired {
		if p := d.pair.status(); p.Status == pairPending {
			st.PairingCode = p.PairingCode
		}
	}
	job := snap.Active
	if job == nil && len(snap.Queue) > 0 {
		job = &snap.Queue[0]
		st.WaitingForReady = !snap.BedClear && !snap.AutoStart
	}
	if job != nil {
		st.Job = &klipper.StateJob{ID: job.ID, Title: job.Name, State: string(job.State)}
	}
	if len(snap.Finished) > 0 && snap.Finished[0].State == jobs.Failed && (job == nil || snap.Finished[0].Updated.After(job.Created)) {
		st.LastError = snap.Finished[0].Message
	}
	d.bridge.SetDaemonState(st)
}
