package identity

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The old plugin's key files below <printer_data>/lmnt_marketplace/, in the
// order ImportLegacyKey tries them: the newest scheme first.
const (
	LegacyEncFile      = "tokens/printer_dlt_private_key.enc"
	LegacyHexFile      = "tokens/printer_dlt_private_key.hex"
	LegacyHexClearFile = "tokens/printer_dlt_private_key.hex.clear"
	LegacyKeypairFile  = "keys/dlt_keypair.json"
)

var legacyKeyFiles = []string{LegacyEncFile, LegacyHexFile, LegacyHexClearFile, LegacyKeypairFile}

// legacyPBKDF2Iterations is what the old plugin used.
const legacyPBKDF2Iterations = 100_000

var (
	// ErrLegacyNotFound means none of the old plugin's key files exist.
	ErrLegacyNotFound = errors.New("identity: no key file of the old plugin found")
	// ErrLegacyFingerprint means the .enc file exists but no hardware
	// fingerprint this host can produce decrypts it (machine-id regenerated,
	// network card changed, or the plugin fell back to a random MAC).
	ErrLegacyFingerprint = errors.New("identity: the old plugin's encrypted key does not decrypt with this host's hardware fingerprint")
	// ErrLegacyMalformed means a key file exists but is not in the expected format.
	ErrLegacyMalformed = errors.New("identity: malformed legacy key file")
)

// NetInterface is what the fingerprint needs to know about a network interface.
type NetInterface struct {
	Index   int
	Name    string
	MAC     net.HardwareAddr
	HasIPv4 bool
}

// LegacyOptions says where the old plugin's files and the host's fingerprint
// sources are.
type LegacyOptions struct {
	// Dir is the plugin's data directory, usually ~/printer_data/lmnt_marketplace.
	Dir string
	// HostRoot is where proc/cpuinfo, etc/machine-id and
	// proc/sys/kernel/hostname are read from ("/" when empty).
	HostRoot string
	// Interfaces lists the network interfaces; nil reads the host's.
	Interfaces func() ([]NetInterface, error)
	// Logger receives progress (file names, key ids; never key material).
	Logger *slog.Logger
}

// LegacyFile reports one legacy key file that was found.
type LegacyFile struct {
	Path  string
	KeyID string // empty when the file could not be read as a key
	Err   error  // why it could not, if so
}

// LegacyImport is the result of ImportLegacyKey.
type LegacyImport struct {
	// Key is the imported key; the caller owns it (seal it, then Zero it).
	Key *Key
	// Source is the file Key came from.
	Source string
	// Files lists every legacy key file found, in the order tried, with its key
	// id or its error: show them when they disagree.
	Files []LegacyFile
}

// ImportLegacyKey reads the old plugin's private key: the fingerprint-bound
// .enc file first, then the clear .hex/.hex.clear files, then the Ed25519 seed
// in keys/dlt_keypair.json. The first file that yields a key wins; every file
// found is reported in Files. It never writes or removes anything.
func ImportLegacyKey(opts LegacyOptions) (*LegacyImport, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	result := &LegacyImport{}
	var firstErr error
	for _, rel := range legacyKeyFiles {
		path := filepath.Join(opts.Dir, filepath.FromSlash(rel))
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var key *Key
		if err == nil {
			switch rel {
			case LegacyEncFile:
				key, err = decryptLegacyEnc(data, opts, log)
			case LegacyHexFile, LegacyHexClearFile:
				key, err = parseLegacyHex(data)
			case LegacyKeypairFile:
				key, err = parseLegacyKeypair(data)
			}
		}
		clear(data)
		if err != nil {
			err = fmt.Errorf("%s: %w", path, err)
			log.Warn("legacy key file unusable", "path", path, "err", err)
			result.Files = append(result.Files, LegacyFile{Path: path, Err: err})
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		result.Files = append(result.Files, LegacyFile{Path: path, KeyID: key.KeyID()})
		if result.Key == nil {
			result.Key, result.Source = key, path
			log.Info("legacy key imported", "path", path, "key_id", key.KeyID())
		} else {
			if !result.Key.Equal(key) {
				log.Warn("legacy key files hold different keys; using the first",
					"used", result.Source, "used_key_id", result.Key.KeyID(), "other", path, "other_key_id", key.KeyID())
			}
			key.Zero()
		}
	}
	if result.Key != nil {
		return result, nil
	}
	if firstErr != nil {
		return result, firstErr
	}
	return result, fmt.Errorf("%w in %s", ErrLegacyNotFound, opts.Dir)
}

func parseLegacyHex(data []byte) (*Key, error) {
	text := bytes.TrimSpace(data)
	if len(text) != 2*KeySize {
		return nil, fmt.Errorf("%w: want %d hex digits, found %d characters", ErrLegacyMalformed, 2*KeySize, len(text))
	}
	var priv [KeySize]byte
	defer clear(priv[:])
	if _, err := hex.Decode(priv[:], text); err != nil {
		return nil, fmt.Errorf("%w: not hex", ErrLegacyMalformed)
	}
	return FromPrivate(priv[:])
}

func parseLegacyKeypair(data []byte) (*Key, error) {
	var file struct {
		PrivateKeyB64 string `json:"private_key_b64"`
	}
	if err := json.Unmarshal(data, &file); err != nil || file.PrivateKeyB64 == "" {
		return nil, fmt.Errorf("%w: want a JSON object with private_key_b64", ErrLegacyMalformed)
	}
	seed, err := base64.StdEncoding.DecodeString(file.PrivateKeyB64)
	defer clear(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: private_key_b64 is not standard Base64", ErrLegacyMalformed)
	}
	// PyNaCl stores the 32-byte seed; libsodium's secret key is seed ‖ public.
	if len(seed) == 64 {
		seed = seed[:32]
	}
	if len(seed) != KeySize {
		return nil, fmt.Errorf("%w: Ed25519 seed is %d bytes, want 32 (or 64)", ErrLegacyMalformed, len(seed))
	}
	return FromEd25519Seed(seed)
}

// decryptLegacyEnc tries the fingerprints the old plugin may have computed on
// this host, most likely first, and stops at the first that decrypts to a
// well-formed key. A wrong password fails the PKCS#7 and hex checks, so a
// false match is out of reach (< 2^-200).
func decryptLegacyEnc(data []byte, opts LegacyOptions, log *slog.Logger) (*Key, error) {
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: not standard Base64", ErrLegacyMalformed)
	}
	const saltLen, ivLen = 32, aes.BlockSize
	if len(raw) < saltLen+ivLen+aes.BlockSize || (len(raw)-saltLen-ivLen)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not salt(32) ‖ iv(16) ‖ AES-CBC ciphertext", ErrLegacyMalformed, len(raw))
	}
	salt, iv, ct := raw[:saltLen], raw[saltLen:saltLen+ivLen], raw[saltLen+ivLen:]
	candidates, err := legacyFingerprints(opts)
	if err != nil {
		return nil, err
	}
	for i, password := range candidates {
		if key := tryLegacyPassword(password, salt, iv, ct); key != nil {
			log.Debug("legacy fingerprint matched", "candidate", i+1, "of", len(candidates))
			return key, nil
		}
	}
	return nil, fmt.Errorf("%w (tried %d fingerprints)", ErrLegacyFingerprint, len(candidates))
}

func tryLegacyPassword(password [32]byte, salt, iv, ct []byte) *Key {
	dk, err := pbkdf2.Key(sha256.New, string(password[:]), salt, legacyPBKDF2Iterations, 32)
	if err != nil {
		return nil
	}
	defer clear(dk)
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil
	}
	plain := make([]byte, len(ct))
	defer clear(plain)
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	n := len(plain)
	pad := int(plain[n-1])
	if pad == 0 || pad > aes.BlockSize || n-pad != 2*KeySize {
		return nil
	}
	for _, b := range plain[n-pad:] {
		if int(b) != pad {
			return nil
		}
	}
	var priv [KeySize]byte
	defer clear(priv[:])
	if _, err := hex.Decode(priv[:], plain[:2*KeySize]); err != nil {
		return nil
	}
	key, err := FromPrivate(priv[:])
	if err != nil {
		return nil
	}
	return key
}

// legacyFingerprints lists the passwords the old plugin may have used here:
// SHA-256 of the "|"-joined sorted identifiers (cpuinfo Serial/Hardware lines,
// machine-id, MAC as a decimal integer), else of the hostname alone.
//
// Python's uuid.getnode() on Linux asks libuuid, which takes the first
// interface (kernel order) that has an IPv4 address and a non-zero MAC; when
// the plugin ran, a different interface may have been up (Wi-Fi instead of
// Ethernet), and the spec leaves open whether machine-id was stripped. So the
// likely fingerprint comes first, then the other interfaces, then the
// unstripped machine-id, then the hostname.
func legacyFingerprints(opts LegacyOptions) ([][32]byte, error) {
	root := opts.HostRoot
	if root == "" {
		root = "/"
	}
	var cpuLines []string
	if b, err := os.ReadFile(filepath.Join(root, "proc", "cpuinfo")); err == nil {
		for _, line := range strings.SplitAfter(string(b), "\n") {
			if strings.Contains(line, "Serial") || strings.Contains(line, "Hardware") {
				cpuLines = append(cpuLines, strings.TrimSpace(line))
			}
		}
	}
	var machineIDs []string // stripped first, then as stored
	if b, err := os.ReadFile(filepath.Join(root, "etc", "machine-id")); err == nil {
		machineIDs = append(machineIDs, strings.TrimSpace(string(b)))
		if string(b) != machineIDs[0] {
			machineIDs = append(machineIDs, string(b))
		}
	}
	list := opts.Interfaces
	if list == nil {
		list = HostInterfaces
	}
	ifaces, err := list()
	if err != nil {
		return nil, fmt.Errorf("identity: listing network interfaces for the legacy fingerprint: %w", err)
	}
	nodes := getnodeCandidates(ifaces)

	var out [][32]byte
	seen := map[[32]byte]bool{}
	add := func(ids []string) {
		sorted := slices.Clone(ids)
		slices.Sort(sorted)
		sum := sha256.Sum256([]byte(strings.Join(sorted, "|")))
		if !seen[sum] {
			seen[sum] = true
			out = append(out, sum)
		}
	}
	midVariants := machineIDs
	if len(midVariants) == 0 {
		midVariants = []string{""} // machine-id was unreadable: no entry
	}
	for _, mid := range midVariants {
		for _, node := range nodes {
			ids := slices.Clone(cpuLines)
			if mid != "" {
				ids = append(ids, mid)
			}
			add(append(ids, node))
		}
	}
	if len(cpuLines) > 0 || len(machineIDs) > 0 {
		// getnode() never fails in practice, but a plugin that ran without
		// interfaces would have had only these.
		ids := slices.Clone(cpuLines)
		if len(machineIDs) > 0 {
			ids = append(ids, machineIDs[0])
		}
		add(ids)
	}
	if host := hostname(root); host != "" {
		add([]string{host})
	}
	return out, nil
}

// getnodeCandidates returns MACs as uuid.getnode() formats them (decimal
// 48-bit integer): libuuid's pick first, then every other non-zero MAC.
func getnodeCandidates(ifaces []NetInterface) []string {
	var out []string
	if node, ok := Getnode(ifaces); ok {
		out = append(out, strconv.FormatUint(node, 10))
	}
	for _, ifc := range byIndex(ifaces) {
		if node, ok := macNode(ifc.MAC); ok {
			if s := strconv.FormatUint(node, 10); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Getnode returns what Python's uuid.getnode() returns on Linux: libuuid's
// node, the MAC of the first interface (kernel order) that has an IPv4
// address and a non-zero MAC. False when there is none, where Python falls
// back to a random node that nothing can reproduce.
func Getnode(ifaces []NetInterface) (uint64, bool) {
	for _, ifc := range byIndex(ifaces) {
		if node, ok := macNode(ifc.MAC); ok && ifc.HasIPv4 {
			return node, true
		}
	}
	return 0, false
}

func byIndex(ifaces []NetInterface) []NetInterface {
	sorted := slices.Clone(ifaces)
	slices.SortStableFunc(sorted, func(a, b NetInterface) int { return a.Index - b.Index })
	return sorted
}

// macNode is the first six bytes of a hardware address as a 48-bit integer
// (libuuid copies six bytes whatever the link type); false for none or all zeros.
func macNode(mac net.HardwareAddr) (uint64, bool) {
	if len(mac) < 6 {
		return 0, false
	}
	var buf [8]byte
	copy(buf[2:], mac[:6])
	n := binary.BigEndian.Uint64(buf[:])
	return n, n != 0
}

// HostInterfaces lists the host's network interfaces for the fingerprint.
func HostInterfaces() ([]NetInterface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]NetInterface, 0, len(ifaces))
	for _, ifc := range ifaces {
		ni := NetInterface{Index: ifc.Index, Name: ifc.Name, MAC: ifc.HardwareAddr}
		if addrs, err := ifc.Addrs(); err == nil {
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
					ni.HasIPv4 = true
					break
				}
			}
		}
		out = append(out, ni)
	}
	return out, nil
}

// hostname is what Python's socket.gethostname() returned: the kernel's nodename.
func hostname(root string) string {
	if b, err := os.ReadFile(filepath.Join(root, "proc", "sys", "kernel", "hostname")); err == nil {
		return strings.TrimSpace(string(b))
	}
	if root == "/" {
		if h, err := os.Hostname(); err == nil {
			return h
		}
	}
	return ""
}
