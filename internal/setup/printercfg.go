package setup

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// The block setup adds to printer.cfg sits between these two lines, so
// --remove takes out exactly what was added, and a second run sees it.
const (
	blockBegin = "# >>> lmntd: added by `lmnt setup`; `lmnt setup --remove` takes it out >>>"
	blockEnd   = "# <<< lmntd <<<"
)

// saveConfigRE matches the header of Klipper's SAVE_CONFIG block. Klipper
// keeps everything above it when it rewrites the file, and expects nothing
// but "#*#" lines below it.
var saveConfigRE = regexp.MustCompile(`^#\*# <-+ SAVE_CONFIG -+>`)

// cfgPlan says what printer.cfg lacks.
type cfgPlan struct {
	sections []string // snippets to add, in order
	notes    []string // things found that setup will not fix by itself
}

// planPrinterCfg checks the whole include tree of printer.cfg (hostPath is
// the file under Root) for the sections lmntd needs.
// bridgeSocket is the socket of the lmntd being wired: a farm instance's
// [encrypted_file_bridge] names it with socket_path.
func planPrinterCfg(hostPath, bridgeSocket string) (cfgPlan, error) {
	var p cfgPlan
	cfg := klippercfg.Parse(hostPath)
	if len(cfg.Files) == 0 {
		for _, f := range cfg.Problems {
			return p, fmt.Errorf("setup: %s", f.String())
		}
		return p, fmt.Errorf("setup: %s could not be read", hostPath)
	}
	if _, ok := cfg.Section(klippercfg.SectionBridge); !ok {
		bridge := "[" + klippercfg.SectionBridge + "]"
		if bridgeSocket != klippercfg.DefaultBridgeSocket {
			bridge += "\nsocket_path: " + bridgeSocket
		}
		p.sections = append(p.sections, bridge)
	}
	if _, ok := cfg.Section(klippercfg.SectionSecurePrint); !ok {
		p.sections = append(p.sections, "["+klippercfg.SectionSecurePrint+"]")
	}
	if _, ok := cfg.Section("gcode_macro " + klippercfg.MacroName); !ok {
		p.sections = append(p.sections, klippercfg.MacroSnippet)
	}
	// Whatever remains wrong after the additions (a foreign SDCARD_PRINT_FILE
	// macro, no [virtual_sdcard], a socket_path elsewhere) is reported, not
	// rewritten: those are the owner's decisions.
	report := klippercfg.Check(cfg, klippercfg.CheckOptions{BridgeSocket: bridgeSocket})
	for _, f := range report.Findings {
		if f.Severity < klippercfg.SeverityWarning {
			continue
		}
		switch f.Code {
		case klippercfg.CodeBridgeMissing, klippercfg.CodeSecurePrintMissing, klippercfg.CodeMacroMissing:
			continue // added below
		}
		p.notes = append(p.notes, f.String())
	}
	return p, nil
}

// insertBlock returns text with the lmntd block holding snippets inserted
// right before the SAVE_CONFIG block (or at the end). The block carries no
// blank lines outside its markers, so removeBlock restores text exactly.
func insertBlock(text string, snippets []string) string {
	var block strings.Builder
	block.WriteString(blockBegin + "\n")
	for i, s := range snippets {
		if i > 0 {
			block.WriteString("\n")
		}
		block.WriteString(s + "\n")
	}
	block.WriteString(blockEnd + "\n")

	lines := strings.SplitAfter(text, "\n")
	at := len(lines)
	for i, l := range lines {
		if saveConfigRE.MatchString(strings.TrimRight(l, "\r\n")) {
			at = i
			break
		}
	}
	head := strings.Join(lines[:at], "")
	if head != "" && !strings.HasSuffix(head, "\n") {
		head += "\n"
	}
	return head + block.String() + strings.Join(lines[at:], "")
}

// removeBlock takes the lmntd block out of text. found is false when there is
// no complete block (the owner deleted a marker: then nothing is touched).
func removeBlock(text string) (string, bool) {
	lines := strings.SplitAfter(text, "\n")
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimRight(l, "\r\n") {
		case blockBegin:
			if begin < 0 {
				begin = i
			}
		case blockEnd:
			if begin >= 0 && end < 0 {
				end = i
			}
		}
	}
	if begin < 0 || end < 0 {
		return text, false
	}
	return strings.Join(lines[:begin], "") + strings.Join(lines[end+1:], ""), true
}

func hasBlock(text string) bool {
	_, found := removeBlock(text)
	return found
}
