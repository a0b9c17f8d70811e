package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// record is one job's journal entry and its outbox: the file
// <state>/jobs/<id>.json. It holds no secret.
type record struct {
	ID         string    `json:"id"`
	Local      bool      `json:"local,omitempty"`
	Name       string    `json:"name,omitempty"`
	PurchaseID string    `json:"purchase_id,omitempty"`
	State      State     `json:"state"`
	Message    string    `json:"message,omitempty"`
	Progress   float64   `json:"progress,omitempty"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	// Seq counts journaled transitions; reports carry the Seq of the
	// transition that caused them.
	Seq int `json:"seq"`
	// PrintName is the print_stats file name of the job's metadata stub
	// (journaled at the hand-off: a restarted lmntd recognises the print).
	PrintName string `json:"print_name,omitempty"`
	// Pending reports, oldest first: the job's outbox.
	Pending []pendingReport `json:"pending,omitempty"`
	// Rejected reports the marketplace refused for good, with its answer.
	Rejected []rejectedReport `json:"rejected,omitempty"`
}

type pendingReport struct {
	Seq       int       `json:"seq"`
	Heartbeat bool      `json:"heartbeat,omitempty"`
	Report    Report    `json:"report"`
	Queued    time.Time `json:"queued"`
	Attempts  int       `json:"attempts,omitempty"`
	// NextAttempt is not persisted: after a restart every report is due.
	NextAttempt time.Time `json:"-"`
}

type rejectedReport struct {
	Report Report    `json:"report"`
	Answer string    `json:"answer"`
	At     time.Time `json:"at"`
}

// store persists records. It is not safe for concurrent use; the engine
// serialises access with its mutex.
type store struct {
	dir string // <state>/jobs
	log *slog.Logger
	idx *jobIndex
	// write replaces a file durably: atomicfile.Write, or in tests a
	// writer that fails like a full disk where no tmpfs can be mounted.
	write func(path string, data []byte) error
	// damaged lists the ids whose records were unreadable when the store
	// was opened (set aside as <id>.json.corrupt): the engine quarantines
	// them.
	damaged []string
}

func openStore(stateDir string, log *slog.Logger) (*store, map[string]*record, error) {
	if stateDir == "" {
		return nil, nil, errors.New("jobs: no state directory configured")
	}
	dir := filepath.Join(stateDir, "jobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("jobs: create journal directory: %w", err)
	}
	s := &store{dir: dir, log: log, write: atomicfile.Write}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("jobs: read journal: %w", err)
	}
	recs := make(map[string]*record)
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A temp file of a write that did not finish: the
			// rename never happened, so the old record stands.
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || checkID(id) != nil {
			continue
		}
		var r record
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			if err = json.Unmarshal(data, &r); err == nil && r.ID != id {
				err = fmt.Errorf("the record is of job %q", r.ID)
			}
		}
		if err != nil {
			// Unreadable (EACCES, EIO) or damaged: keep the bytes for
			// diagnosis, out of the way of the loader. Writes are
			// atomic, so this means outside damage.
			bad := filepath.Join(dir, name+".corrupt")
			log.Error("unreadable journal record set aside; the job is quarantined", "job", id, "file", bad, "err", err)
			if rerr := os.Rename(filepath.Join(dir, name), bad); rerr != nil {
				log.Error("could not set the unreadable record aside", "job", id, "err", rerr)
			}
			s.damaged = append(s.damaged, id)
			continue
		}
		recs[id] = &r
	}
	s.idx = openIndex(dir, recs, log)
	return s, recs, nil
}

// save writes r atomically: temp file, fsync, rename, directory fsync.
func (s *store) save(r *record) error {
	data, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("jobs: encode record %s: %w", r.ID, err)
	}
	if err := s.write(filepath.Join(s.dir, r.ID+".json"), data); err != nil {
		return fmt.Errorf("jobs: journal job %s: %w", r.ID, err)
	}
	if err := s.idx.note(r); err != nil {
		// The record is durable: opening the store repairs the index
		// from it, and the next write appends the line again.
		s.log.Warn("job index", "job", r.ID, "err", err)
	}
	return nil
}

func (s *store) remove(id string) error {
	if err := os.Remove(filepath.Join(s.dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// prune drops the oldest finished records without pending reports beyond
// keep. The ids of finished jobs are what stops a job from being printed
// twice, so keep is generous.
func (s *store) prune(recs map[string]*record, keep int) {
	var done []*record
	for _, r := range recs {
		if r.State.Terminal() && len(r.Pending) == 0 {
			done = append(done, r)
		}
	}
	if len(done) <= keep {
		return
	}
	sort.Slice(done, func(i, j int) bool { return done[i].Updated.Before(done[j].Updated) })
	for _, r := range done[:len(done)-keep] {
		if err := s.remove(r.ID); err != nil {
			s.log.Warn("pruning journal record failed", "job", r.ID, "err", err)
			continue
		}
		delete(recs, r.ID)
	}
}

// bedState is the persisted bed-clear confirmation (<state>/bed.json).
type bedState struct {
	// Clear: the owner confirmed the bed is clear since the last print of
	// ours ended. A fresh install has had no print of ours, so it starts
	// clear.
	Clear bool      `json:"clear"`
	At    time.Time `json:"at"`
}

func loadBed(stateDir string) (bedState, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, "bed.json"))
	if errors.Is(err, os.ErrNotExist) {
		return bedState{Clear: true}, nil
	}
	if err != nil {
		return bedState{}, fmt.Errorf("jobs: read bed state: %w", err)
	}
	var b bedState
	if err := json.Unmarshal(data, &b); err != nil {
		// Unknown means not confirmed: the safe side.
		return bedState{Clear: false}, fmt.Errorf("jobs: bed state unreadable, assuming not clear: %w", err)
	}
	return b, nil
}

func saveBed(stateDir string, b bedState) error {
	data, _ := json.Marshal(b)
	return atomicfile.Write(filepath.Join(stateDir, "bed.json"), data)
}
