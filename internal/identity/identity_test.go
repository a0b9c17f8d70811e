package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

func TestGenerateKeyForms(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Zero()
	priv := k.Private()
	if priv == nil || *priv == ([KeySize]byte{}) {
		t.Fatal("Generate produced no private key")
	}
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	gotPub := k.PublicKey()
	if !bytes.Equal(pub, gotPub[:]) {
		t.Fatal("PublicKey is not the X25519 base-point multiple of the private key")
	}
	b64 := k.PublicKeyBase64()
	if len(b64) != 44 || !strings.HasSuffix(b64, "=") {
		t.Errorf("PublicKeyBase64 = %q, want 44 chars of padded standard Base64", b64)
	}
	sum := sha256.Sum256(pub)
	if k.KeyID() != hex.EncodeToString(sum[:]) {
		t.Errorf("KeyID = %s, want lowercase hex SHA-256 of the public key", k.KeyID())
	}
	t.Logf("private key page mlocked: %v", k.Locked())

	other, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Zero()
	if other.KeyID() == k.KeyID() || other.Equal(k) {
		t.Fatal("two generated keys are equal")
	}
}

func TestZeroWipes(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	page := k.secret
	k.Zero()
	if k.Private() != nil {
		t.Fatal("Private() after Zero is not nil")
	}
	if page.mem != nil {
		t.Fatal("secret page still referenced after Zero")
	}
	k.Zero() // idempotent
}

func TestFromPrivateRejectsWrongLength(t *testing.T) {
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := FromPrivate(make([]byte, n)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("FromPrivate(%d bytes) err = %v, want ErrInvalidKey", n, err)
		}
	}
	if _, err := FromEd25519Seed(make([]byte, 31)); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("FromEd25519Seed(31 bytes) err = %v, want ErrInvalidKey", err)
	}
}

func TestFormattingNeverRevealsPrivateKey(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Zero()
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("key", "key", k)
	out := fmt.Sprintf("%v %+v %#v %s", k, k, k, k) + logs.String()
	assertNoSecret(t, out, k.Private()[:])
	if !strings.Contains(out, k.KeyID()) {
		t.Errorf("formatted key does not name its key id: %s", out)
	}
}

// legacyCase is case.json written by testdata/make_legacy_vectors.py.
type legacyCase struct {
	Description string `json:"description"`
	Interfaces  []struct {
		Index int    `json:"index"`
		Name  string `json:"name"`
		MAC   string `json:"mac"`
		IPv4  bool   `json:"ipv4"`
	} `json:"interfaces"`
	Expected struct {
		PrivateKeyHex string `json:"private_key_hex"`
		PublicKeyB64  string `json:"public_key_b64"`
		KeyID         string `json:"key_id"`
	} `json:"expected"`
	DEKPackage    string `json:"dek_package"`
	DEKHex        string `json:"dek_hex"`
	Ed25519Seed   string `json:"ed25519_seed_hex"`
	ExpectedToken *struct {
		Format         string `json:"format"`
		Token          string `json:"token"`
		ExpiresAt      string `json:"expires_at"`
		CreatedAtLocal string `json:"created_at_local"`
		PrinterName    string `json:"printer_name"`
		PrinterID      string `json:"printer_id"`
	} `json:"token"`
}

func loadCase(t *testing.T, dir string) legacyCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c legacyCase
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c legacyCase) options(t *testing.T, dir string, log *slog.Logger) LegacyOptions {
	ifaces := make([]NetInterface, 0, len(c.Interfaces))
	for _, i := range c.Interfaces {
		mac, err := net.ParseMAC(i.MAC)
		if err != nil {
			t.Fatal(err)
		}
		ifaces = append(ifaces, NetInterface{Index: i.Index, Name: i.Name, MAC: mac, HasIPv4: i.IPv4})
	}
	return LegacyOptions{
		Dir:        filepath.Join(dir, "printer_data", "lmnt_marketplace"),
		HostRoot:   filepath.Join(dir, "host"),
		Interfaces: func() ([]NetInterface, error) { return ifaces, nil },
		Logger:     log,
	}
}

// openDEKPackage opens a marketplace DEK package the way jobcrypt does:
// B64(ephemeral_pub):B64(nonce):B64(box), a NaCl box to the printer key.
func openDEKPackage(t *testing.T, pkg string, priv *[32]byte) []byte {
	t.Helper()
	parts := strings.Split(pkg, ":")
	if len(parts) != 3 {
		t.Fatalf("DEK package has %d segments", len(parts))
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			t.Fatal(err)
		}
		raw[i] = b
	}
	var eph [32]byte
	var nonce [24]byte
	copy(eph[:], raw[0])
	copy(nonce[:], raw[1])
	dek, ok := box.Open(nil, raw[2], &nonce, &eph, priv)
	if !ok {
		t.Fatal("imported key does not open the DEK package addressed to the old public key")
	}
	return dek
}

func TestImportLegacyVectors(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "legacy", "*"))
	if err != nil || len(dirs) < 6 {
		t.Fatalf("legacy vectors missing (run testdata/make_legacy_vectors.py): %v %v", dirs, err)
	}
	wantSource := map[string]string{
		"rpi4-enc-wifi":          LegacyEncFile,
		"x86-enc-raw-machine-id": LegacyEncFile,
		"hostname-only-enc":      LegacyEncFile,
		"hex":                    LegacyHexFile,
		"hex-clear":              LegacyHexClearFile,
		"dlt-keypair-json":       LegacyKeypairFile,
		"enc-stale-with-hex":     LegacyHexFile,
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			c := loadCase(t, dir)
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			opts := c.options(t, dir, log)
			start := time.Now()
			res, err := ImportLegacyKey(opts)
			if err != nil {
				t.Fatalf("ImportLegacyKey: %v", err)
			}
			t.Logf("%s: imported in %v", c.Description, time.Since(start).Round(time.Millisecond))
			defer res.Key.Zero()
			if want := filepath.Join(opts.Dir, filepath.FromSlash(wantSource[name])); res.Source != want {
				t.Errorf("Source = %s, want %s", res.Source, want)
			}
			if got := hex.EncodeToString(res.Key.Private()[:]); got != c.Expected.PrivateKeyHex {
				t.Errorf("private key = %s, want %s", got, c.Expected.PrivateKeyHex)
			}
			if res.Key.PublicKeyBase64() != c.Expected.PublicKeyB64 || res.Key.KeyID() != c.Expected.KeyID {
				t.Errorf("public %s / key id %s, want %s / %s", res.Key.PublicKeyBase64(), res.Key.KeyID(), c.Expected.PublicKeyB64, c.Expected.KeyID)
			}
			dek := openDEKPackage(t, c.DEKPackage, res.Key.Private())
			if hex.EncodeToString(dek) != c.DEKHex {
				t.Errorf("DEK = %x, want %s", dek, c.DEKHex)
			}
			if name == "enc-stale-with-hex" {
				if len(res.Files) != 2 || !errors.Is(res.Files[0].Err, ErrLegacyFingerprint) || res.Files[1].KeyID != c.Expected.KeyID {
					t.Errorf("Files = %+v, want the .enc reported as ErrLegacyFingerprint and the .hex key", res.Files)
				}
			}
			priv, _ := hex.DecodeString(c.Expected.PrivateKeyHex)
			assertNoSecret(t, logs.String(), priv)
		})
	}
}

func TestEd25519SeedMatchesLibsodium(t *testing.T) {
	c := loadCase(t, filepath.Join("testdata", "legacy", "dlt-keypair-json"))
	seed, _ := hex.DecodeString(c.Ed25519Seed)
	k, err := FromEd25519Seed(seed)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Zero()
	if got := hex.EncodeToString(k.Private()[:]); got != c.Expected.PrivateKeyHex {
		t.Fatalf("converted key %s, libsodium gives %s", got, c.Expected.PrivateKeyHex)
	}
}

func TestImportLegacyErrors(t *testing.T) {
	write := func(t *testing.T, dir, rel, content string) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	noIfaces := func() ([]NetInterface, error) { return nil, nil }
	cases := []struct {
		name, rel, content string
		want               error
	}{
		{"empty dir", "", "", ErrLegacyNotFound},
		{"short hex", LegacyHexFile, strings.Repeat("ab", 31), ErrLegacyMalformed},
		{"non-hex", LegacyHexFile, strings.Repeat("zz", 32), ErrLegacyMalformed},
		{"enc not base64", LegacyEncFile, "!!!", ErrLegacyMalformed},
		{"enc truncated", LegacyEncFile, base64.StdEncoding.EncodeToString(make([]byte, 60)), ErrLegacyMalformed},
		{"enc other host", LegacyEncFile, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32+16+80)), ErrLegacyFingerprint},
		{"keypair not json", LegacyKeypairFile, "{", ErrLegacyMalformed},
		{"keypair short seed", LegacyKeypairFile, `{"private_key_b64":"` + base64.StdEncoding.EncodeToString(make([]byte, 16)) + `"}`, ErrLegacyMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.rel != "" {
				write(t, dir, tc.rel, tc.content)
			}
			res, err := ImportLegacyKey(LegacyOptions{Dir: dir, HostRoot: t.TempDir(), Interfaces: noIfaces})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if res.Key != nil {
				t.Fatal("a key was returned with the error")
			}
			if tc.rel != "" && !strings.Contains(err.Error(), tc.rel) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestGetnodeMatchesPython checks the libuuid emulation against Debian's
// Python on this very host: the fingerprint's MAC must be the one the old
// plugin saw.
func TestGetnodeMatchesPython(t *testing.T) {
	out, err := exec.Command("/usr/bin/python3", "-c", "import uuid; print(uuid.getnode())").Output()
	if err != nil {
		t.Fatalf("running Debian's python3 (scripts/install-deps.sh installs it): %v", err)
	}
	pyNode, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ifaces, err := HostInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	node, ok := Getnode(ifaces)
	if !ok {
		// No interface with IPv4 and a MAC: Python used a random node, which
		// has the multicast bit set.
		if pyNode&(1<<40) == 0 {
			t.Fatalf("Getnode found no interface but Python's node %x is not random", pyNode)
		}
		return
	}
	if node != pyNode {
		t.Fatalf("Getnode = %d (%x), Python uuid.getnode() = %d (%x)", node, node, pyNode, pyNode)
	}
	t.Logf("uuid.getnode() = %x on this host", node)
}

func TestGetnodeSkipsInterfacesWithoutIPv4(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	ifaces := []NetInterface{
		{Index: 3, Name: "wlan0", MAC: mac("dc:a6:32:00:00:02"), HasIPv4: true},
		{Index: 1, Name: "lo", MAC: nil, HasIPv4: true},
		{Index: 2, Name: "eth0", MAC: mac("dc:a6:32:00:00:01"), HasIPv4: false},
	}
	node, ok := Getnode(ifaces)
	if !ok || node != 0xdca632000002 {
		t.Fatalf("Getnode = %x, %v; want wlan0's MAC", node, ok)
	}
	got := getnodeCandidates(ifaces)
	want := []string{strconv.FormatUint(0xdca632000002, 10), strconv.FormatUint(0xdca632000001, 10)}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("candidates = %v, want %v", got, want)
	}
}

func TestImportLegacyToken(t *testing.T) {
	for _, name := range []string{"rpi4-enc-wifi", "x86-enc-raw-machine-id"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", "legacy", name)
			c := loadCase(t, dir)
			want := c.ExpectedToken
			tok, err := ImportLegacyToken(filepath.Join(dir, "printer_data", "lmnt_marketplace"))
			if err != nil {
				t.Fatal(err)
			}
			exp, _ := time.Parse(time.RFC3339, want.ExpiresAt)
			if tok.Format != want.Format || tok.Token != want.Token || !tok.ExpiresAt.Equal(exp) ||
				tok.PrinterName != want.PrinterName || tok.PrinterID != want.PrinterID {
				t.Errorf("token = %#v %v, want %+v", tok, tok.ExpiresAt, *want)
			}
			if want.CreatedAtLocal != "" {
				created, _ := time.ParseInLocation("2006-01-02T15:04:05.999999", want.CreatedAtLocal, time.Local)
				if !tok.CreatedAt.Equal(created) {
					t.Errorf("CreatedAt = %v, want %v (local)", tok.CreatedAt, created)
				}
			}
			var logs bytes.Buffer
			slog.New(slog.NewJSONHandler(&logs, nil)).Info("token", "token", tok)
			for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok), logs.String()} {
				if strings.Contains(s, tok.Token) {
					t.Errorf("token leaked into %q", s)
				}
			}
		})
	}
	dir := t.TempDir()
	p := filepath.Join(dir, filepath.FromSlash(LegacyTokenFile))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`[]`, `{"token":""}`, `{"printer_token":"x","token_expires":"next week"}`, `{"printer_token":5}`} {
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ImportLegacyToken(dir); !errors.Is(err, ErrLegacyMalformed) {
			t.Errorf("%s: err = %v, want ErrLegacyMalformed", bad, err)
		}
	}
	if err := os.WriteFile(p, []byte(`{"token":"t","expiry":1767225600,"printer_id":42}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := ImportLegacyToken(dir)
	if err != nil || tok.ExpiresAt.Unix() != 1767225600 || tok.PrinterID != "42" || tok.Format != TokenFormatLegacy {
		t.Errorf("epoch expiry / numeric id: %v %v", tok, err)
	}
}

// assertNoSecret fails if text contains the key in hex (either case) or
// Base64 (standard or URL alphabet, padded or not).
func assertNoSecret(t *testing.T, text string, secret []byte) {
	t.Helper()
	forms := []string{
		hex.EncodeToString(secret), strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret),
	}
	for _, f := range forms {
		if strings.Contains(text, f) {
			t.Fatalf("private key found in output (%s)", f)
		}
	}
}
