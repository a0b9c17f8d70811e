// Package identity holds the printer's X25519 key: the root of trust that makes
// a job decryptable by this printer only. It generates the key, derives the
// public forms the marketplace expects (standard padded Base64, key_id = hex
// SHA-256 of the raw public key), converts legacy Ed25519 seeds, imports the
// old Python plugin's key and token files, and wipes the private key when done.
//
// The private key lives in one page of its own, mlocked (never swapped) and
// excluded from core dumps where the kernel allows, and never leaves that page
// except through Private(), which hands the DEK opener a pointer to it. Key's
// String/LogValue/GoString print the key id only.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the size of an X25519 private or public key.
const KeySize = 32

// KeyType is the marketplace's name for the key algorithm.
const KeyType = "x25519"

// ErrInvalidKey means key bytes were not a usable X25519 private key.
var ErrInvalidKey = errors.New("identity: invalid X25519 private key")

// Key is the printer's X25519 key pair. Use it through a pointer; call Zero
// when done. A zeroed Key must not be used again.
type Key struct {
	secret *secretPage // private key storage; nil after Zero
	pub    [KeySize]byte
}

// Generate makes a new key from crypto/rand.
func Generate() (*Key, error) {
	page := newSecretPage()
	if _, err := rand.Read(page.key()[:]); err != nil {
		page.wipe()
		return nil, fmt.Errorf("identity: reading random bytes: %w", err)
	}
	return fromPage(page)
}

// FromPrivate makes a Key from a raw 32-byte X25519 private key (copied; the
// caller should wipe its own copy).
func FromPrivate(priv []byte) (*Key, error) {
	if len(priv) != KeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(priv), KeySize)
	}
	page := newSecretPage()
	copy(page.key()[:], priv)
	return fromPage(page)
}

// FromEd25519Seed converts a 32-byte Ed25519 seed into the X25519 key the same
// way libsodium's crypto_sign_ed25519_sk_to_curve25519 does: SHA-512 of the
// seed, first 32 bytes, clamped. The oldest plugin installs stored such seeds.
func FromEd25519Seed(seed []byte) (*Key, error) {
	if len(seed) != KeySize {
		return nil, fmt.Errorf("%w: Ed25519 seed is %d bytes, want %d", ErrInvalidKey, len(seed), KeySize)
	}
	h := sha512.Sum512(seed)
	defer clear(h[:])
	page := newSecretPage()
	k := page.key()
	copy(k[:], h[:KeySize])
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64
	return fromPage(page)
}

func fromPage(page *secretPage) (*Key, error) {
	pub, err := curve25519.X25519(page.key()[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which a clamped scalar times the
		// base point cannot produce; treat it as corrupt input anyway.
		page.wipe()
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	k := &Key{secret: page}
	copy(k.pub[:], pub)
	return k, nil
}

// PublicKey returns the raw 32-byte public key.
func (k *Key) PublicKey() [KeySize]byte { return k.pub }

// PublicKeyBase64 is the public key as the marketplace wants it on the wire:
// standard Base64 with padding.
func (k *Key) PublicKeyBase64() string { return base64.StdEncoding.EncodeToString(k.pub[:]) }

// KeyID is the lowercase hex SHA-256 of the raw public key.
func (k *Key) KeyID() string { return KeyIDOf(k.pub) }

// KeyIDOf computes the key id of a raw public key.
func KeyIDOf(pub [KeySize]byte) string {
	sum := sha256.Sum256(pub[:])
	return hex.EncodeToString(sum[:])
}

// Private exposes the private key for the DEK opener
// (jobcrypt.OpenDEKPackage) and the sealer. The pointer stays valid until
// Zero; do not copy the array it points to. Nil after Zero.
func (k *Key) Private() *[KeySize]byte {
	if k == nil || k.secret == nil {
		return nil
	}
	return k.secret.key()
}

// Equal reports whether two keys hold the same private key (constant time).
func (k *Key) Equal(other *Key) bool {
	a, b := k.Private(), other.Private()
	return a != nil && b != nil && subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Locked reports whether the private key's page is mlocked (kept out of swap).
// False means the lock limit was too low; the key still works.
func (k *Key) Locked() bool { return k.secret != nil && k.secret.locked }

// Zero wipes the private key and releases its page. Safe to call twice.
func (k *Key) Zero() {
	if k == nil || k.secret == nil {
		return
	}
	k.secret.wipe()
	k.secret = nil
}

// String names the key by its id; it never prints private material.
func (k *Key) String() string { return "x25519:" + k.KeyID() }

// GoString keeps %#v from printing the private key.
func (k *Key) GoString() string { return "identity.Key{" + k.KeyID() + "}" }

// LogValue logs the key as its id.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.KeyID()) }
