package marketsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The simulator wraps DEKs byte for byte as PyNaCl does.
func TestDEKPackageMatchesPythonVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	if len(v.DEKPackages) == 0 {
		t.Fatal("the vectors hold no DEK packages")
	}
	for _, c := range v.DEKPackages {
		t.Run(c.Name, func(t *testing.T) {
			var pub, eph [32]byte
			var nonce [24]byte
			copy(pub[:], mustB64(t, c.RecipientPublicB64))
			copy(eph[:], mustHex(t, c.EphemeralPrivateHex))
			copy(nonce[:], mustB64(t, c.NonceB64))
			got, err := dekPackage(&pub, &eph, &nonce, mustHex(t, c.DEKHex))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Package {
				t.Fatalf("package\n got %s\nwant %s", got, c.Package)
			}
		})
	}
}

// The simulator's AES-256-CBC/PKCS#7 matches python3-cryptography.
func TestCBCMatchesPythonVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	if len(v.CBC) == 0 {
		t.Fatal("the vectors hold no CBC cases")
	}
	for _, c := range v.CBC {
		t.Run(c.Name, func(t *testing.T) {
			got, err := cbcEncrypt(mustHex(t, c.KeyHex), mustHex(t, c.IVHex), mustB64(t, c.PlaintextB64))
			if err != nil {
				t.Fatal(err)
			}
			if want := mustB64(t, c.CiphertextB64); !bytes.Equal(got, want) {
				t.Fatalf("ciphertext\n got %x\nwant %x", got, want)
			}
		})
	}
}

// A job encrypted with injected randomness is reproducible and opens with
// the reference implementations (nacl/box, crypto/aes).
func TestEncryptJobDeterministicAndOpens(t *testing.T) {
	pub, priv, err := box.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	seed := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 20) // ≥ 32+24+32+16 bytes
	gcode := []byte("G28\nG1 X10 Y10 F3000\n; end\n")
	a, err := encryptJob(bytes.NewReader(seed), pub, gcode)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encryptJob(bytes.NewReader(seed), pub, gcode)
	if err != nil {
		t.Fatal(err)
	}
	if a.dekPackage != b.dekPackage || a.ivHex != b.ivHex || !bytes.Equal(a.ciphertext, b.ciphertext) {
		t.Fatal("same randomness gave different jobs")
	}
	parts := strings.Split(a.dekPackage, ":")
	if len(parts) != 3 {
		t.Fatalf("package has %d segments", len(parts))
	}
	var eph [32]byte
	var nonce [24]byte
	copy(eph[:], mustB64(t, parts[0]))
	copy(nonce[:], mustB64(t, parts[1]))
	dek, ok := box.Open(nil, mustB64(t, parts[2]), &nonce, &eph, priv)
	if !ok || len(dek) != 32 {
		t.Fatalf("box.Open ok=%v len=%d", ok, len(dek))
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, len(a.ciphertext))
	cipher.NewCBCDecrypter(block, mustHex(t, a.ivHex)).CryptBlocks(plain, a.ciphertext)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 16 || !bytes.Equal(plain[:len(plain)-pad], gcode) {
		t.Fatalf("decrypted %q", plain)
	}
}
