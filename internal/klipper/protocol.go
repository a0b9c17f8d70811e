package klipper

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
)

// ProtocolVersion is the bridge protocol version this package speaks
// (docs/bridge-protocol.md).
const ProtocolVersion = 1

// MaxPacketSize bounds one packet (one JSON object) in either direction.
const MaxPacketSize = 65536

// Packet types of the bridge protocol.
const (
	TypeHello   = "hello"
	TypeWelcome = "welcome"
	TypeStatus  = "status"
	TypeResult  = "result"
	TypeFetch   = "fetch"
	TypeCommand = "command"
	TypePong    = "pong"
	TypePrint   = "print"
	TypeFile    = "file"
	TypeCancel  = "cancel"
	TypeConsole = "console"
	TypePing    = "ping"
	TypeState   = "state"
	TypeError   = "error"
)

// Error codes carried by `error` packets.
const (
	CodeForbidden          = "forbidden"
	CodeUnsupportedVersion = "unsupported_version"
	CodeHelloRequired      = "hello_required"
	CodeUnknownType        = "unknown_type"
	CodeBadPacket          = "bad_packet"
	CodeUnknownFile        = "unknown_file"
	CodeBusy               = "busy"
)

// ConsolePrefix starts every console line the daemon shows in Klipper, so
// the owner can tell lmntd's messages from Klipper's own.
const ConsolePrefix = "LMNT:"

// Envelope is the part every packet shares. Request/answer pairs share ID.
type Envelope struct {
	V    int    `json:"v"`
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// KlipperInfo identifies the Klipper the extra runs in.
type KlipperInfo struct {
	Version  string   `json:"version"`
	Flavour  string   `json:"flavour"` // "klipper" or "kalico"
	Features []string `json:"features,omitempty"`
}

// Hello is what the extra says about itself when it connects.
type Hello struct {
	ExtraVersion string      `json:"extra_version"`
	Klipper      KlipperInfo `json:"klipper"`
	ConfigFile   string      `json:"config_file"`
	Sections     []string    `json:"sections,omitempty"`
}

// KlippyStatus is Klipper's own state (webhooks): ready, startup, shutdown
// or error, with its message.
type KlippyStatus struct {
	State   string `json:"state"`
	Message string `json:"message"`
}

// PrintStatsInfo is print_stats' info block (SET_PRINT_STATS_INFO).
type PrintStatsInfo struct {
	TotalLayer   *int `json:"total_layer"`
	CurrentLayer *int `json:"current_layer"`
}

// PrintStats mirrors Klipper's print_stats status. State is one of
// standby, printing, paused, complete, cancelled, error.
type PrintStats struct {
	State         string         `json:"state"`
	Filename      string         `json:"filename"`
	TotalDuration float64        `json:"total_duration"`
	PrintDuration float64        `json:"print_duration"`
	FilamentUsed  float64        `json:"filament_used"` // mm
	Message       string         `json:"message"`
	Info          PrintStatsInfo `json:"info"`
}

// VirtualSDCard mirrors Klipper's virtual_sdcard status.
type VirtualSDCard struct {
	FilePath     string  `json:"file_path"`
	Progress     float64 `json:"progress"`
	IsActive     bool    `json:"is_active"`
	FilePosition int64   `json:"file_position"`
	FileSize     int64   `json:"file_size"`
}

// Status is the extra's report of what Klipper is doing.
type Status struct {
	Klippy         KlippyStatus  `json:"klippy"`
	PrintStats     PrintStats    `json:"print_stats"`
	VirtualSDCard  VirtualSDCard `json:"virtual_sdcard"`
	ReadyConfirmed bool          `json:"ready_confirmed"`
}

// Metadata is the wire encoding of what travels with a print so the extra
// can set print_stats info (TOTAL_LAYER) and show what it prints: the part
// of a gcode.Metadata the extra uses (packetMetadata). Every field is
// optional.
type Metadata struct {
	TotalLayer     int     `json:"total_layer,omitempty"`
	EstimatedTime  float64 `json:"estimated_time,omitempty"` // seconds
	Slicer         string  `json:"slicer,omitempty"`
	FilamentUsedMM float64 `json:"filament_used_mm,omitempty"`
	FilamentType   string  `json:"filament_type,omitempty"`
	LayerHeight    float64 `json:"layer_height,omitempty"`
	ObjectHeight   float64 `json:"object_height,omitempty"`
}

// packetMetadata encodes m for the print packet (nil: nothing known).
func packetMetadata(m *gcode.Metadata) Metadata {
	if m == nil {
		return Metadata{}
	}
	return Metadata{TotalLayer: m.LayerCount, EstimatedTime: m.EstimatedTime, Slicer: m.SlicerName,
		FilamentUsedMM: m.FilamentUsedMM, FilamentType: m.FilamentType, LayerHeight: m.LayerHeight,
		ObjectHeight: m.ObjectHeight}
}

// Command is an lmnt G-code command the owner ran in Klipper (LMNT_READY).
type Command struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Packets, one struct per type. Every one embeds Envelope.

type HelloPacket struct {
	Envelope
	Hello
}

type WelcomePacket struct {
	Envelope
	DaemonVersion  string `json:"daemon_version"`
	StatusInterval int    `json:"status_interval"`
	// IdleStatusInterval is the heartbeat while Klipper prints nothing:
	// changes still travel at once (an extra without this field sends
	// every StatusInterval).
	IdleStatusInterval int `json:"idle_status_interval,omitempty"`
}

type StatusPacket struct {
	Envelope
	Status
}

type ResultPacket struct {
	Envelope
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type FetchPacket struct {
	Envelope
	Name string `json:"name"`
}

type CommandPacket struct {
	Envelope
	Command
}

// FilePacket is both `print` (with JobID) and `file` (answer to a fetch).
type FilePacket struct {
	Envelope
	JobID string `json:"job_id,omitempty"`
	Name  string `json:"name"`
	// Filename, when set, is the print_stats file name: the job's metadata
	// stub under the gcodes directory (.lmnt/<title>.gcode), so Moonraker
	// attaches the stub's metadata to the print.
	Filename string   `json:"filename,omitempty"`
	Title    string   `json:"title,omitempty"`
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Metadata Metadata `json:"metadata"`
}

// DaemonState is what lmntd wants Klipper's users to see in the extras'
// get_status(): Mainsail's object view, macros, Moonraker subscriptions.
type DaemonState struct {
	PairingCode     string    `json:"pairing_code,omitempty"`
	WaitingForReady bool      `json:"waiting_for_ready"`
	Job             *StateJob `json:"job,omitempty"`
	LastError       string    `json:"last_error,omitempty"`
}

// StateJob is the job lmntd is working on.
type StateJob struct {
	ID    string `json:"id"`
	Title string `json:"title,omitempty"`
	State string `json:"state"`
}

// StatePacket carries DaemonState, sent after the welcome and on change.
type StatePacket struct {
	Envelope
	DaemonState
}

type CancelPacket struct {
	Envelope
	JobID  string `json:"job_id"`
	Reason string `json:"reason,omitempty"`
}

type ConsolePacket struct {
	Envelope
	Text string `json:"text"`
}

type ErrorPacket struct {
	Envelope
	Code      string `json:"code"`
	Message   string `json:"message"`
	Supported []int  `json:"supported,omitempty"`
}

// NewEnvelope returns the envelope of a version-1 packet.
func NewEnvelope(typ, id string) Envelope {
	return Envelope{V: ProtocolVersion, Type: typ, ID: id}
}

// MaxNameLen bounds a virtual file name sent to Klipper.
const MaxNameLen = 128

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ErrInvalidName is returned for a file name Klipper could mangle: only
// [A-Za-z0-9._-] survive every supported version's FILENAME parsing.
var ErrInvalidName = errors.New("invalid virtual file name")

// ValidateName checks that name is safe to hand to Klipper as a file name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidName, len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	case !namePattern.MatchString(name):
		return fmt.Errorf("%w: %q has characters outside [A-Za-z0-9._-]", ErrInvalidName, name)
	}
	return nil
}

// MaxFilenameLen bounds a print_stats file name (a metadata stub's).
const MaxFilenameLen = 200

// StubFolder is the only folder a print_stats file name may name: the
// metadata stubs' (internal/mdstub).
const StubFolder = ".lmnt"

// ValidateFilename checks a print_stats file name: .lmnt/<name>.gcode,
// valid UTF-8, no control character, no further folder, no hidden name.
func ValidateFilename(name string) error {
	file, ok := strings.CutPrefix(name, StubFolder+"/")
	switch {
	case len(name) > MaxFilenameLen:
		return fmt.Errorf("%w: filename of %d bytes, at most %d", ErrInvalidName, len(name), MaxFilenameLen)
	case !ok || file == "" || strings.ContainsAny(file, "/\\") || file[0] == '.':
		return fmt.Errorf("%w: filename %q is not %s/<name>.gcode", ErrInvalidName, name, StubFolder)
	case !strings.HasSuffix(file, ".gcode") || !utf8.ValidString(file):
		return fmt.Errorf("%w: filename %q is not %s/<name>.gcode", ErrInvalidName, name, StubFolder)
	}
	for _, r := range file {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: filename %q has control characters", ErrInvalidName, name)
		}
	}
	return nil
}

// VirtualName is the file name Klipper shows for a job: virtual_<job>.gcode.
func VirtualName(jobID string) string {
	return "virtual_" + jobID + ".gcode"
}
