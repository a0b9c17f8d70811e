package marketsim

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"

	"golang.org/x/crypto/poly1305"
	"golang.org/x/crypto/salsa20/salsa"
)

// The marketplace's job encryption, written independently of the printer
// side (package jobcrypt): crypto_box is composed here from X25519,
// HSalsa20, XSalsa20 and Poly1305 rather than taken from nacl/box, so a
// mistake in either implementation makes the round-trip tests fail.

// sigma is Salsa20's "expand 32-byte k" constant.
var sigma = [16]byte{'e', 'x', 'p', 'a', 'n', 'd', ' ', '3', '2', '-', 'b', 'y', 't', 'e', ' ', 'k'}

// boxSeal is NaCl crypto_box: tag(16) ‖ ciphertext, to peerPub from priv.
func boxSeal(msg []byte, nonce *[24]byte, peerPub, priv *[32]byte) ([]byte, error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, err
	}
	pk, err := ecdh.X25519().NewPublicKey(peerPub[:])
	if err != nil {
		return nil, err
	}
	shared, err := sk.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("marketsim: X25519: %w", err)
	}
	// crypto_box_beforenm: k = HSalsa20(shared, 0).
	var s, k [32]byte
	copy(s[:], shared)
	var zero [16]byte
	salsa.HSalsa20(&k, &zero, &s, &sigma)
	clear(s[:])
	defer clear(k[:])
	return secretboxSeal(msg, nonce, &k), nil
}

// secretboxSeal is crypto_secretbox (XSalsa20-Poly1305).
func secretboxSeal(msg []byte, nonce *[24]byte, key *[32]byte) []byte {
	// XSalsa20: subkey = HSalsa20(key, nonce[0:16]); Salsa20 with
	// nonce[16:24] and block counter 0.
	var sub [32]byte
	var n16 [16]byte
	copy(n16[:], nonce[:16])
	salsa.HSalsa20(&sub, &n16, key, &sigma)
	defer clear(sub[:])
	var counter [16]byte
	copy(counter[:8], nonce[16:])
	// The first 32 bytes of keystream are the Poly1305 key; the message is
	// encrypted with the keystream from byte 32 on.
	buf := make([]byte, 32+len(msg))
	copy(buf[32:], msg)
	salsa.XORKeyStream(buf, buf, &counter, &sub)
	var polyKey [32]byte
	copy(polyKey[:], buf[:32])
	defer clear(polyKey[:])
	ct := buf[32:]
	var tag [16]byte
	poly1305.Sum(&tag, ct, &polyKey)
	return append(tag[:], ct...)
}

// dekPackage is the marketplace's wrapped DEK:
// B64(ephemeral_pub) ":" B64(nonce) ":" B64(crypto_box(dek)).
func dekPackage(recipientPub, ephPriv *[32]byte, nonce *[24]byte, dek []byte) (string, error) {
	sk, err := ecdh.X25519().NewPrivateKey(ephPriv[:])
	if err != nil {
		return "", err
	}
	box, err := boxSeal(dek, nonce, recipientPub, ephPriv)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return b64(sk.PublicKey().Bytes()) + ":" + b64(nonce[:]) + ":" + b64(box), nil
}

// cbcEncrypt is AES-256-CBC with PKCS#7 padding.
func cbcEncrypt(key, iv, plain []byte) ([]byte, error) {
	if len(key) != 32 || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("marketsim: AES-256-CBC needs a 32-byte key and 16-byte IV, got %d and %d", len(key), len(iv))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	out := make([]byte, len(plain)+pad)
	copy(out, plain)
	for i := len(plain); i < len(out); i++ {
		out[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
	return out, nil
}

// encryptedJob is a job as the marketplace stores it.
type encryptedJob struct {
	dekPackage string
	ivHex      string
	ciphertext []byte
}

// encryptJob encrypts gcode for the printer key with fresh randomness from
// rnd: an ephemeral X25519 key, a nonce, a DEK and an IV.
func encryptJob(rnd io.Reader, recipientPub *[32]byte, gcode []byte) (encryptedJob, error) {
	var eph [32]byte
	var nonce [24]byte
	dek := make([]byte, 32)
	iv := make([]byte, 16)
	defer clear(eph[:])
	defer clear(dek)
	for _, b := range [][]byte{eph[:], nonce[:], dek, iv} {
		if _, err := io.ReadFull(rnd, b); err != nil {
			return encryptedJob{}, fmt.Errorf("marketsim: randomness: %w", err)
		}
	}
	pkg, err := dekPackage(recipientPub, &eph, &nonce, dek)
	if err != nil {
		return encryptedJob{}, err
	}
	ct, err := cbcEncrypt(dek, iv, gcode)
	if err != nil {
		return encryptedJob{}, err
	}
	return encryptedJob{dekPackage: pkg, ivHex: hex.EncodeToString(iv), ciphertext: ct}, nil
}
