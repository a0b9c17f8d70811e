package marketplace

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// errNoTime is a time field that is absent, null or "": not an error of the
// answer, just nothing said.
var errNoTime = errors.New("no time given")

// epochMillisFrom: a bare epoch number at or above this is in milliseconds.
// 1e11 seconds is the year 5138; 1e11 milliseconds is March 1973, before any
// marketplace existed, so the two ranges cannot be confused.
const epochMillisFrom = 1e11

// naiveLayouts are the zone-less and zoned text forms seen from the real
// server and from Python's isoformat/fromisoformat: RFC 3339 with or without
// fractions, a naive ISO time (taken as UTC), with a space instead of the T,
// and a date alone (midnight UTC).
var naiveLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

// parseWireTime reads a time the marketplace sent, in every form the real
// server and the old plugin's era produced:
//   - an ISO 8601 / RFC 3339 string, with or without zone (naive ⇒ UTC),
//     with or without seconds, or a date alone;
//   - an HTTP date (RFC 1123, RFC 850, ANSI C);
//   - an epoch number in seconds or milliseconds, as a JSON number or a
//     numeric string;
//   - a Firestore Timestamp as JSON: {"_seconds","_nanoseconds"} (the
//     Admin SDK's toJSON) or {"seconds","nanos"} (the REST/protobuf form).
//
// Absent, null and "" return errNoTime.
func parseWireTime(v json.RawMessage) (time.Time, error) {
	s := strings.TrimSpace(string(v))
	if s == "" || s == "null" || s == `""` {
		return time.Time{}, errNoTime
	}
	switch s[0] {
	case '"':
		var str string
		if err := json.Unmarshal(v, &str); err != nil {
			return time.Time{}, fmt.Errorf("malformed string %s", clip(s))
		}
		return parseTimeText(str)
	case '{':
		return parseFirestoreTimestamp(v)
	case 't', 'f', '[':
		return time.Time{}, fmt.Errorf("%s is not a time", describeJSON(s))
	}
	return epochText(s, describeJSON(s))
}

// epochText reads an epoch number from its text: integers exactly (epoch
// milliseconds do not survive a float64 round trip to the millisecond),
// fractions as floats.
func epochText(s, what string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n >= epochMillisFrom {
			return epochTime(float64(n/1000) + float64(n%1000)/1000)
		}
		return epochTime(float64(n))
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s is not a time", what)
	}
	return epochTime(f)
}

func parseTimeText(str string) (time.Time, error) {
	str = strings.TrimSpace(str)
	if str == "" {
		return time.Time{}, errNoTime
	}
	if _, err := strconv.ParseFloat(str, 64); err == nil {
		return epochText(str, strconv.Quote(str))
	}
	for _, layout := range naiveLayouts {
		if t, err := time.Parse(layout, str); err == nil {
			return t.UTC(), nil
		}
	}
	// RFC 1123 with a numeric zone, then the three HTTP date forms.
	if t, err := time.Parse(time.RFC1123Z, str); err == nil {
		return t.UTC(), nil
	}
	if t, err := http.ParseTime(str); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a recognised time (ISO 8601, RFC 1123 or epoch)", clip(str))
}

func epochTime(f float64) (time.Time, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		return time.Time{}, fmt.Errorf("epoch %v is not a time", f)
	}
	if f >= epochMillisFrom {
		f /= 1000
	}
	if f > 1e11 { // still beyond the year 5138 after the millisecond guess
		return time.Time{}, fmt.Errorf("epoch %v is out of range", f)
	}
	sec, frac := math.Modf(f)
	// Round to the microsecond: a float's fraction is never exact, and no
	// server sends finer times.
	return time.Unix(int64(sec), 0).Add(time.Duration(math.Round(frac*1e6)) * time.Microsecond).UTC(), nil
}

func parseFirestoreTimestamp(v json.RawMessage) (time.Time, error) {
	var o map[string]json.RawMessage
	if err := json.Unmarshal(v, &o); err != nil {
		return time.Time{}, fmt.Errorf("malformed object %s", clip(string(v)))
	}
	num := func(names ...string) (float64, bool, error) {
		for _, n := range names {
			raw, ok := o[n]
			if !ok {
				continue
			}
			var f float64
			if err := json.Unmarshal(raw, &f); err != nil {
				// The protobuf JSON form quotes int64 seconds.
				var str string
				if json.Unmarshal(raw, &str) != nil {
					return 0, true, fmt.Errorf("%s is %s, not a number", n, describeJSON(string(raw)))
				}
				if f, err = strconv.ParseFloat(str, 64); err != nil {
					return 0, true, fmt.Errorf("%s is %q, not a number", n, clip(str))
				}
			}
			return f, true, nil
		}
		return 0, false, nil
	}
	sec, ok, err := num("_seconds", "seconds")
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, fmt.Errorf("object %s is not a Firestore timestamp (no _seconds)", clip(string(v)))
	}
	nanos, _, err := num("_nanoseconds", "nanos")
	if err != nil {
		return time.Time{}, err
	}
	if sec <= 0 || sec > 1e11 || nanos < 0 || nanos >= 1e9 {
		return time.Time{}, fmt.Errorf("Firestore timestamp %s is out of range", clip(string(v)))
	}
	return time.Unix(int64(sec), int64(nanos)).UTC(), nil
}

// describeJSON names the JSON type of a raw value for a log line, without
// echoing long or secret-bearing content.
func describeJSON(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "nothing"
	}
	switch s[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "the number " + clip(s)
}

func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
