package jobs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// The index is what keeps a job from being printed twice when its record is
// gone: pruned (beyond KeepFinished) or damaged. It lists every job id ever
// accepted, and whether the job finished with every report delivered, one
// event a line ("<id> accepted", "<id> done"), appended and fsync'd after
// the record it describes is written. A crash between the two leaves a
// record the index lacks, which opening the store repairs; a torn last line
// is ignored for the same reason. ~40 bytes a job: a printer that prints
// ten jobs a day for ten years writes under 3 MB, and opening the store
// compacts it to one line per job.

const indexFile = "accepted.idx"

type jobIndex struct {
	path string
	done map[string]bool // every id ever accepted → finished and delivered
	// unwritten holds lines a failed append could not write (a full
	// disk); flush writes them before any new one.
	unwritten []string
}

// openIndex reads the index and adds what recs show and it lacks. Neither
// an unreadable index nor a full disk stops lmntd from starting: the first
// is set aside and rebuilt from the records, and what the second keeps
// from being written is appended later (flush).
func openIndex(dir string, recs map[string]*record, log *slog.Logger) *jobIndex {
	x := &jobIndex{path: filepath.Join(dir, indexFile), done: map[string]bool{}}
	data, err := os.ReadFile(x.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// Only finished jobs whose records were pruned are forgotten:
		// the marketplace no longer offers those.
		log.Error("unreadable job index set aside; rebuilt from the journal records", "file", x.path+".corrupt", "err", err)
		_ = os.Rename(x.path, x.path+".corrupt")
		data = nil
	}
	lines := 0
	for line := range strings.Lines(string(data)) {
		id, event, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if !ok || !strings.HasSuffix(line, "\n") || checkID(id) != nil || event != "accepted" && event != "done" {
			continue // a torn last line, or outside damage: the records repair it
		}
		lines++
		x.done[id] = x.done[id] || event == "done"
	}
	var missing []string
	for id, r := range recs {
		if done, ok := x.done[id]; !ok || finished(r) && !done {
			x.done[id] = finished(r)
			missing = append(missing, indexLine(id, finished(r)))
		}
	}
	if lines != len(x.done) || len(missing) > 0 {
		if err := atomicfile.Write(x.path, x.compact()); err != nil {
			log.Warn("could not compact the job index", "err", err)
			sort.Strings(missing)
			x.unwritten = missing
		}
	}
	return x
}

// finished: the job is over and the marketplace has heard the outcome, so
// nothing of it remains to be done even if its record is lost.
func finished(r *record) bool { return r.State.Terminal() && len(r.Pending) == 0 }

func (x *jobIndex) compact() []byte {
	ids := make([]string, 0, len(x.done))
	for id := range x.done {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b bytes.Buffer
	for _, id := range ids {
		b.WriteString(indexLine(id, x.done[id]))
	}
	return b.Bytes()
}

func indexLine(id string, done bool) string {
	if done {
		return id + " done\n"
	}
	return id + " accepted\n"
}

// known reports whether id was ever accepted.
func (x *jobIndex) known(id string) bool {
	_, ok := x.done[id]
	return ok
}

// note records what r's (just written) record shows, if the index does not
// know it yet.
func (x *jobIndex) note(r *record) error {
	done, ok := x.done[r.ID]
	if ok && (done || !finished(r)) {
		return x.flush()
	}
	x.done[r.ID] = finished(r)
	x.unwritten = append(x.unwritten, indexLine(r.ID, finished(r)))
	return x.flush()
}

// flush appends the unwritten lines.
func (x *jobIndex) flush() error {
	if len(x.unwritten) == 0 {
		return nil
	}
	f, err := os.OpenFile(x.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("jobs: append to the job index: %w", err)
	}
	w := bufio.NewWriter(f)
	// A newline first ends any line a failed append tore; empty lines
	// are skipped when reading.
	_ = w.WriteByte('\n')
	for _, l := range x.unwritten {
		_, _ = w.WriteString(l)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A partial append leaves a torn line at worst; the lines are
		// appended again after a newline.
		return fmt.Errorf("jobs: append to the job index: %w", err)
	}
	x.unwritten = nil
	return nil
}
