package marketsim

import (
	"net/http"
	"strconv"
	"time"
)

// This file is the simulator's Varying mode: the shapes the real
// marketplace's builds give the fields the old plugin reads but does not
// depend on. The old plugin passes created_at, purchase_id, status,
// user_account_id and printer_kek_id through untouched (jobs.py) and parses
// expiries with datetime.fromisoformat inside try/except, so the server was
// never held to one shape; a printer must accept them all.

// createdAtShapes renders a job's creation time as another build would.
var createdAtShapes = []func(t time.Time) any{
	func(t time.Time) any { return t.Format("2006-01-02T15:04:05.000Z") },         // JS toISOString
	func(t time.Time) any { return t.Format("2006-01-02T15:04:05.000000") },       // Python isoformat, naive
	func(t time.Time) any { return t.Unix() },                                     // epoch seconds
	func(t time.Time) any { return t.UnixMilli() },                                // epoch milliseconds (Date.now())
	func(t time.Time) any { return firestoreTimestamp(t) },                        // Firestore Timestamp toJSON
	func(time.Time) any { return nil },                                            // not set
	func(t time.Time) any { return t.Format(http.TimeFormat) },                    // Date.toUTCString
	func(t time.Time) any { return strconv.FormatInt(t.Unix(), 10) },              // epoch as a string
	func(t time.Time) any { return t.Format("2006-01-02T15:04:05.999999-07:00") }, // Python isoformat, aware
}

func firestoreTimestamp(t time.Time) map[string]int64 {
	return map[string]int64{"_seconds": t.Unix(), "_nanoseconds": int64(t.Nanosecond())}
}

// varyJob reshapes the optional fields of one poll entry (variant picks the
// shape; consecutive variants differ in every field).
func varyJob(m map[string]any, j *job, variant int) {
	m["created_at"] = createdAtShapes[variant%len(createdAtShapes)](j.created)
	switch variant % 3 {
	case 0: // ids as numbers (an integer-keyed SQL build)
		m["purchase_id"] = 7000 + variant
		m["user_account_id"] = 42
		m["printer_kek_id"] = nil
	case 1: // optional fields null
		m["purchase_id"] = nil
		m["user_account_id"] = nil
		m["status"] = nil
	case 2: // optional fields absent, extra fields present
		delete(m, "purchase_id")
		delete(m, "user_account_id")
		delete(m, "printer_kek_id")
		m["model_name"] = "20 mm cube"
		m["metadata"] = map[string]any{"layer_height": 0.2, "tags": []string{"pla"}}
		m["priority"] = variant
	}
	if variant%2 == 1 {
		// An informational field of a type no client could predict.
		m["status"] = map[string]any{"code": "ready_to_print"}
	}
}

// withOddEntries puts entries a client must skip around the real jobs of
// a poll: one without print_job_id, one that is not an object, one with a
// null id, one whose DEK package has the wrong type. None is a job of the
// queue, so a client that skips them loses nothing.
func withOddEntries(jobs []any, poll int) []any {
	odd := []any{
		map[string]any{"purchase_id": "orphan", "status": "ready_to_print", "created_at": nil},
		"job-as-a-string",
		map[string]any{"print_job_id": nil, "gcode_iv_hex": "00"},
		map[string]any{"print_job_id": "odd-dek-" + strconv.Itoa(poll), "gcode_dek_encrypted_hex": 12345,
			"gcode_iv_hex": "00112233445566778899aabbccddeeff", "encrypted_gcode_download_url": "https://example.invalid/x"},
	}
	out := make([]any, 0, len(jobs)+len(odd))
	out = append(out, odd[0], odd[1])
	for i, j := range jobs {
		out = append(out, j)
		if i == 0 {
			out = append(out, odd[2])
		}
	}
	return append(out, odd[3:]...)
}

// expiryShapes render an expiry time as the real builds did: the old
// plugin accepted anything datetime.fromisoformat reads and survived the
// rest (None). dateOnly allows the date-alone form, which is only sane for
// long lifetimes (a token), not for a ten-minute pairing code.
var expiryShapes = []func(t time.Time) any{
	func(t time.Time) any { return t.Format(time.RFC3339) },
	func(t time.Time) any { return t.Format("2006-01-02T15:04") }, // no zone, no seconds
	func(t time.Time) any { return t.Format(time.RFC1123) },
	func(t time.Time) any { return t.Format("2006-01-02") },
	func(t time.Time) any { return "soon" }, // unparseable: the JWT exp must win
}

// expiryShape renders an expiry for an answer; with Varying each answer
// takes the next shape (the date-alone and unparseable ones only where
// dateOnly allows).
func (s *Server) expiryShape(t time.Time, dateOnly bool) any {
	if !s.o.Varying {
		return t.Format(time.RFC3339)
	}
	s.shapes++
	n := len(expiryShapes)
	if !dateOnly {
		n = 3
	}
	return expiryShapes[s.shapes%n](t)
}
