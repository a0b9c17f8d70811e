package jobcrypt

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func key32(t testing.TB, s string) *[32]byte {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 32 {
		t.Fatalf("key %q is %d bytes", s, len(b))
	}
	return (*[32]byte)(b)
}

func iv16(t testing.TB, s string) *[16]byte {
	t.Helper()
	iv, err := ParseIVHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return &iv
}

var dekErrors = map[string]error{
	"segment_count":     ErrPackageSegments,
	"base64":            ErrPackageBase64,
	"public_key_length": ErrEphemeralKeyLength,
	"nonce_length":      ErrNonceLength,
	"auth":              ErrPackageAuth,
	"dek_length":        ErrDEKLength,
}

func TestDEKPackageVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.DEKPackages {
		t.Run(c.Name, func(t *testing.T) {
			priv := key32(t, c.RecipientPrivateHex)
			dek, err := OpenDEKPackage(c.Package, priv)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, c.DEKHex)
			switch c.DEKKind {
			case "aes256":
				if dek.Kind != DEKAES256 || !bytes.Equal(dek.AES256[:], want) {
					t.Fatalf("got %v %x, want AES-256 key %x", dek.Kind, dek.AES256, want)
				}
			case "fernet":
				fk, err := ParseFernetKey(string(want))
				if err != nil {
					t.Fatal(err)
				}
				if dek.Kind != DEKFernet || dek.Fernet != *fk {
					t.Fatalf("got %v, want the Fernet key %s", dek.Kind, want)
				}
			default:
				t.Fatalf("unknown dek_kind %q", c.DEKKind)
			}
			dek.Zero()
			if dek.AES256 != ([32]byte{}) || dek.Fernet != (FernetKey{}) {
				t.Fatal("Zero left key material")
			}

			// The package is reproducible from the vector's parts: Go's
			// box.Seal with the ephemeral key gives the same string, so a
			// simulator can rebuild it.
			eph := key32(t, c.EphemeralPrivateHex)
			recipientPub := (*[32]byte)(unb64(t, c.RecipientPublicB64))
			nonce := (*[24]byte)(unb64(t, c.NonceB64))
			sealed := box.Seal(nil, want, nonce, recipientPub, eph)
			rebuilt := c.EphemeralPublicB64 + ":" + c.NonceB64 + ":" + base64.StdEncoding.EncodeToString(sealed)
			if rebuilt != c.Package {
				t.Fatalf("box.Seal from the vector's parts gives\n%s\nwant\n%s", rebuilt, c.Package)
			}
		})
	}
}

func TestDEKPackageErrorVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.DEKPackageErrors {
		t.Run(c.Name, func(t *testing.T) {
			want, ok := dekErrors[c.Error]
			if !ok {
				t.Fatalf("unknown error class %q", c.Error)
			}
			dek, err := OpenDEKPackage(c.Package, key32(t, c.RecipientPrivateHex))
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
			if dek != nil {
				t.Fatal("a DEK came back with an error")
			}
			for other, e := range dekErrors {
				if other != c.Error && errors.Is(err, e) {
					t.Fatalf("err %v also matches %s", err, other)
				}
			}
			if c.Segment != "" {
				var be *PackageBase64Error
				if !errors.As(err, &be) || be.Segment != c.Segment {
					t.Fatalf("err = %v, want a Base64 error in segment %s", err, c.Segment)
				}
			}
		})
	}
}

var cbcErrors = map[string]error{"empty": ErrEmptyCiphertext, "length": ErrCiphertextLength, "padding": ErrPadding}

// smallChunks drives the engine through many chunks, several decrypt
// segments per chunk and buffer reuse even on the short vectors.
var streamShapes = []struct {
	name string
	opts StreamOptions
}{
	{"default", StreamOptions{}},
	{"16-byte chunks", StreamOptions{ChunkSize: 16, Buffers: 2}},
	{"48-byte chunks", StreamOptions{ChunkSize: 48}},
	{"1000-byte chunks", StreamOptions{ChunkSize: 1000, Workers: 3}},
}

func TestCBCVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.CBC {
		pt, ct := unb64(t, c.PlaintextB64), unb64(t, c.CiphertextB64)
		for _, s := range streamShapes {
			for _, rd := range []struct {
				name string
				wrap func([]byte) *bytes.Reader
			}{{"reader", bytes.NewReader}} {
				t.Run(c.Name+"/"+s.name+"/"+rd.name, func(t *testing.T) {
					var out bytes.Buffer
					n, err := DecryptCBC(&out, rd.wrap(ct), key32(t, c.KeyHex), iv16(t, c.IVHex), s.opts)
					if err != nil {
						t.Fatal(err)
					}
					if n != int64(len(pt)) || !bytes.Equal(out.Bytes(), pt) {
						t.Fatalf("plaintext differs: got %d bytes, want %d", out.Len(), len(pt))
					}
				})
			}
			t.Run(c.Name+"/"+s.name+"/one-byte-reads", func(t *testing.T) {
				var out bytes.Buffer
				_, err := DecryptCBC(&out, iotest.OneByteReader(bytes.NewReader(ct)), key32(t, c.KeyHex), iv16(t, c.IVHex), s.opts)
				if err != nil || !bytes.Equal(out.Bytes(), pt) {
					t.Fatalf("err %v, plaintext equal %v", err, bytes.Equal(out.Bytes(), pt))
				}
			})
		}
	}
}

func TestCBCErrorVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.CBCErrors {
		for _, s := range streamShapes {
			t.Run(c.Name+"/"+s.name, func(t *testing.T) {
				want := cbcErrors[c.Error]
				if want == nil {
					t.Fatalf("unknown error class %q", c.Error)
				}
				_, err := DecryptCBC(&bytes.Buffer{}, bytes.NewReader(unb64(t, c.CiphertextB64)), key32(t, c.KeyHex), iv16(t, c.IVHex), s.opts)
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want %v", err, want)
				}
			})
		}
	}
}

var fernetErrors = map[string]error{"key": ErrFernetKey, "token": ErrFernetToken, "version": ErrFernetVersion, "hmac": ErrFernetHMAC}

func TestFernetVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.Fernet {
		for _, s := range streamShapes[:3] {
			t.Run(c.Name+"/"+s.name, func(t *testing.T) {
				k, err := ParseFernetKey(c.Key)
				if err != nil {
					t.Fatal(err)
				}
				var out bytes.Buffer
				// A trailing newline, as in a token saved to a file, is ignored.
				n, err := DecryptFernet(&out, iotest.HalfReader(bytes.NewReader([]byte(c.Token+"\n"))), k, s.opts)
				if err != nil {
					t.Fatal(err)
				}
				pt := unb64(t, c.PlaintextB64)
				if n != int64(len(pt)) || !bytes.Equal(out.Bytes(), pt) {
					t.Fatalf("plaintext differs: got %d bytes, want %d", out.Len(), len(pt))
				}
			})
		}
	}
}

func TestFernetErrorVectors(t *testing.T) {
	v := testutil.LoadCryptoVectors(t)
	for _, c := range v.FernetErrors {
		t.Run(c.Name, func(t *testing.T) {
			want := fernetErrors[c.Error]
			if want == nil {
				t.Fatalf("unknown error class %q", c.Error)
			}
			k, err := ParseFernetKey(c.Key)
			if err == nil {
				_, err = DecryptFernet(&bytes.Buffer{}, bytes.NewReader([]byte(c.Token)), k, StreamOptions{ChunkSize: 64})
			}
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
		})
	}
}
