package jobcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"testing"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

var fuzzRecipient = [32]byte{7, 7, 7}

// FuzzOpenDEKPackage: no input panics; success only with a well-formed
// package whose box opens to a key of an accepted length.
func FuzzOpenDEKPackage(f *testing.F) {
	v := testutil.LoadCryptoVectors(f)
	for _, c := range v.DEKPackages {
		f.Add(c.Package)
	}
	for _, c := range v.DEKPackageErrors {
		f.Add(c.Package)
	}
	var nonce [24]byte
	var eph [32]byte
	eph[0] = 9
	recipientPub := publicOf(&fuzzRecipient)
	sealed := box.Seal(nil, make([]byte, 32), &nonce, recipientPub, &eph)
	f.Add(base64.StdEncoding.EncodeToString(publicOf(&eph)[:]) + ":" + base64.StdEncoding.EncodeToString(nonce[:]) + ":" + base64.StdEncoding.EncodeToString(sealed))
	f.Fuzz(func(t *testing.T, pkg string) {
		dek, err := OpenDEKPackage(pkg, &fuzzRecipient)
		if err != nil {
			if dek != nil {
				t.Fatal("DEK with error")
			}
			known := []error{ErrPackageSegments, ErrPackageBase64, ErrEphemeralKeyLength, ErrNonceLength, ErrPackageAuth, ErrDEKLength}
			for _, e := range known {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("untyped error %v", err)
		}
		if dek.Kind != DEKAES256 && dek.Kind != DEKFernet {
			t.Fatalf("kind %v", dek.Kind)
		}
	})
}

func publicOf(priv *[32]byte) *[32]byte {
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		panic(err)
	}
	return (*[32]byte)(pub)
}

// FuzzDecryptCBC: the stream agrees with a one-shot reference decryption,
// for every chunk size, on arbitrary ciphertext.
func FuzzDecryptCBC(f *testing.F) {
	v := testutil.LoadCryptoVectors(f)
	for _, c := range v.CBC {
		f.Add(unb64(f, c.CiphertextB64), uint16(16))
	}
	for _, c := range v.CBCErrors {
		f.Add(unb64(f, c.CiphertextB64), uint16(48))
	}
	key := key32(f, v.CBC[0].KeyHex)
	iv := iv16(f, v.CBC[0].IVHex)
	f.Fuzz(func(t *testing.T, ct []byte, chunk uint16) {
		var out bytes.Buffer
		_, err := DecryptCBC(&out, bytes.NewReader(ct), key, iv, StreamOptions{ChunkSize: int(chunk), Workers: 2})
		want, wantErr := referenceCBC(key, iv, ct)
		if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("err = %v, reference %v", err, wantErr)
		}
		if err == nil && !bytes.Equal(out.Bytes(), want) {
			t.Fatal("plaintext differs from the reference")
		}
	})
}

func referenceCBC(key *[32]byte, iv *[16]byte, ct []byte) ([]byte, error) {
	switch {
	case len(ct) == 0:
		return nil, ErrEmptyCiphertext
	case len(ct)%16 != 0:
		return nil, ErrCiphertextLength
	}
	b, _ := aes.NewCipher(key[:])
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(pt, ct)
	n := int(pt[len(pt)-1])
	if n == 0 || n > 16 || !bytes.Equal(pt[len(pt)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, ErrPadding
	}
	return pt[:len(pt)-n], nil
}

// FuzzFernet: arbitrary tokens never panic and never succeed unless the
// HMAC verifies; a token built from fuzzed plaintext decrypts back to it.
func FuzzFernet(f *testing.F) {
	v := testutil.LoadCryptoVectors(f)
	key, err := ParseFernetKey(v.Fernet[0].Key)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range v.Fernet {
		f.Add([]byte(c.Token), []byte("G28\n"))
	}
	for _, c := range v.FernetErrors {
		f.Add([]byte(c.Token), []byte{})
	}
	f.Fuzz(func(t *testing.T, token, plaintext []byte) {
		if _, err := DecryptFernet(&bytes.Buffer{}, bytes.NewReader(token), key, StreamOptions{ChunkSize: 32}); err != nil {
			known := []error{ErrFernetToken, ErrFernetVersion, ErrFernetHMAC, ErrPadding, ErrCiphertextLength}
			ok := false
			for _, e := range known {
				ok = ok || errors.Is(err, e)
			}
			if !ok {
				t.Fatalf("untyped error %v", err)
			}
		}
		var iv [16]byte
		copy(iv[:], token)
		tok := encryptFernet(key, &iv, 1700000000, plaintext)
		var out bytes.Buffer
		if _, err := DecryptFernet(&out, bytes.NewReader([]byte(tok)), key, StreamOptions{ChunkSize: 32}); err != nil || !bytes.Equal(out.Bytes(), plaintext) {
			t.Fatalf("round trip: err %v", err)
		}
	})
}
