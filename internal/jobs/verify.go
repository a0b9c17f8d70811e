package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

// A job whose key material, ciphertext or plaintext is refused must not tell
// anyone outside the process why: the pipeline's reasons (a NUL byte at an
// offset, invalid UTF-8, bad padding) turn the local print API into a
// decryption oracle when an attacker can vary the IV and watch the answer.
// So the API, the job history, the marketplace report and Klipper's console
// all get one sentence and a random reference; the reason goes to the log at
// debug level under the same reference, for the owner who has shell access.

// VerificationFailed is the one message outside the process for a job whose
// file failed decryption or the G-code gate. The API's words: the status
// page recognises it.
const VerificationFailed = apitype.VerificationFailed

// verificationMessage is VerificationFailed with a fresh reference. The
// reference is random, so it says nothing about the stage that failed.
func verificationMessage() (msg, ref string) {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	ref = hex.EncodeToString(b[:])
	return fmt.Sprintf("%s (ref %s)", VerificationFailed, ref), ref
}

// isVerificationFailure tells a job's message from verificationMessage.
func isVerificationFailure(msg string) bool { return strings.HasPrefix(msg, VerificationFailed) }

// The two Decryptor failures that say nothing about the plaintext. The
// Decryptor marks its error with one (UnreadableBody, NoMemory); any other
// error is a verification failure.
var (
	// ErrUnreadableBody: the body could not be read (network, cancel).
	ErrUnreadableBody = errors.New("jobs: the job's body could not be read")
	// ErrNoMemory: the memfd for the decrypted file could not be made.
	ErrNoMemory = errors.New("jobs: no memory for the decrypted file")
)

// UnreadableBody marks err as ErrUnreadableBody, keeping its text.
func UnreadableBody(err error) error { return markedError{err, ErrUnreadableBody} }

// NoMemory marks err as ErrNoMemory, keeping its text.
func NoMemory(err error) error { return markedError{err, ErrNoMemory} }

type markedError struct{ err, mark error }

func (m markedError) Error() string   { return m.err.Error() }
func (m markedError) Unwrap() []error { return []error{m.err, m.mark} }

// prepareFailure turns a Decryptor error into the job's message. Only
// failures that say nothing about the plaintext keep their text: the body
// could not be read (network, cancel), the memfd could not be made.
// Anything else, including errors of a kind
// this function does not know, is a verification failure.
func (e *Engine) prepareFailure(id string, err error) string {
	switch {
	case errors.Is(err, ErrUnreadableBody):
		return "Could not read the file: " + err.Error()
	case errors.Is(err, ErrNoMemory):
		e.log.Debug("memfd failure", "job", id, "err", err)
		return "Not enough memory to hold the decrypted file"
	}
	msg, ref := verificationMessage()
	e.log.Debug("job failed verification", "job", id, "ref", ref, "err", err)
	return msg
}

// Failed local jobs are rate limited: even with the reasons hidden, the
// time a failure takes could leak where the pipeline stopped, so after a few
// failures in a window no local job is decrypted until the window moves on.
const (
	localFailureLimit  = 5
	localFailureWindow = time.Hour
)

// localFailuresLocked drops failures older than the window and says whether
// another local job may be decrypted now; if not, until when it must wait.
func (e *Engine) localFailuresLocked(now time.Time) (ok bool, until time.Time) {
	kept := e.localFailures[:0]
	for _, t := range e.localFailures {
		if now.Sub(t) < localFailureWindow {
			kept = append(kept, t)
		}
	}
	e.localFailures = kept
	if len(kept) < localFailureLimit {
		return true, time.Time{}
	}
	return false, kept[0].Add(localFailureWindow)
}

// ErrTooManyFailures is returned by SubmitLocal while failed local jobs are
// rate limited.
var ErrTooManyFailures = errors.New("jobs: too many local jobs failed verification")

func tooManyFailures(until time.Time) error {
	return fmt.Errorf("%w: %d in the last %s; local jobs are refused until %s",
		ErrTooManyFailures, localFailureLimit, localFailureWindow, until.UTC().Format(time.RFC3339))
}

// seedLocalFailuresLocked counts the local verification failures the journal
// shows within the window, so a restart does not reset the limit.
func (e *Engine) seedLocalFailuresLocked() {
	now := e.clock.Now()
	for _, r := range e.recs {
		if r.Local && r.State == Failed && isVerificationFailure(r.Message) && now.Sub(r.Updated) < localFailureWindow {
			e.localFailures = append(e.localFailures, r.Updated)
		}
	}
	slices.SortFunc(e.localFailures, time.Time.Compare)
}

// ErrPlaintextOffer: the marketplace offered a job without a DEK package.
// Marketplace jobs are always encrypted for this printer; a job without one
// would be a downgrade to plaintext by whoever controls the marketplace's
// answers, so it is refused (local plaintext prints stay allowed).
var ErrPlaintextOffer = errors.New("the marketplace sent the job without a DEK package; unencrypted marketplace jobs are refused")
