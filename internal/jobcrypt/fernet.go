package jobcrypt

import (
	"crypto/aes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Errors of the Fernet key and token parsers and of the Fernet stream.
var (
	ErrFernetKey     = errors.New("jobcrypt: invalid Fernet key (want 32 bytes as 44 characters of URL-safe Base64)")
	ErrFernetToken   = errors.New("jobcrypt: malformed Fernet token")
	ErrFernetVersion = errors.New("jobcrypt: Fernet token version byte is not 0x80")
	ErrFernetHMAC    = errors.New("jobcrypt: Fernet token HMAC does not verify (wrong key, or the token was altered)")
)

const (
	fernetKeyEncodedLen = 44
	fernetVersion       = 0x80
	fernetHeaderLen     = 1 + 8 + aes.BlockSize // version, timestamp, IV
	fernetMACLen        = sha256.Size
)

// FernetKey is a Fernet key: 16 bytes for HMAC-SHA256, then 16 for AES-128.
type FernetKey struct {
	signing, encryption [16]byte
}

// ParseFernetKey parses a Fernet key as Python's cryptography writes it:
// 32 bytes in URL-safe Base64 with padding (44 characters).
func ParseFernetKey(s string) (*FernetKey, error) {
	return parseFernetKeyBytes([]byte(s))
}

func parseFernetKeyBytes(s []byte) (*FernetKey, error) {
	if len(s) != fernetKeyEncodedLen {
		return nil, fmt.Errorf("%w: got %d characters", ErrFernetKey, len(s))
	}
	var raw [33]byte // DecodedLen(44) = 33: room for the decoder, 32 used
	defer clear(raw[:])
	n, err := base64.URLEncoding.Decode(raw[:], s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFernetKey, err)
	}
	if n != 32 {
		return nil, fmt.Errorf("%w: decodes to %d bytes", ErrFernetKey, n)
	}
	k := &FernetKey{}
	copy(k.signing[:], raw[:16])
	copy(k.encryption[:], raw[16:32])
	return k, nil
}

// Zero overwrites the key.
func (k *FernetKey) Zero() {
	clear(k.signing[:])
	clear(k.encryption[:])
}

// DecryptFernet streams a Fernet token (URL-safe Base64 text; line breaks
// are ignored) from src and writes its plaintext to dst. The token's
// timestamp is not checked: jobs carry no TTL.
//
// Plaintext reaches dst before the HMAC at the token's end has been read,
// so dst may hold unauthenticated bytes when an error is returned: the
// caller must discard everything written unless the error is nil. A nil
// error means the HMAC verified and the padding was good. A bad HMAC is
// reported as ErrFernetHMAC even when the padding is also bad, so a forged
// token learns nothing from the padding; and when dst fails, the rest of the
// token is still read and its HMAC checked, so that a wrong key or a forged
// token is reported as ErrFernetHMAC rather than as dst's error.
func DecryptFernet(dst io.Writer, src io.Reader, key *FernetKey, opts StreamOptions) (int64, error) {
	dec := base64.NewDecoder(base64.URLEncoding, src)
	var hdr [fernetHeaderLen]byte
	if n, err := io.ReadFull(dec, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%w: %d bytes, shorter than its %d-byte header", ErrFernetToken, n, fernetHeaderLen)
		}
		return 0, tokenReadError(err)
	}
	if hdr[0] != fernetVersion {
		return 0, fmt.Errorf("%w: got 0x%02x", ErrFernetVersion, hdr[0])
	}
	mac := hmac.New(sha256.New, key.signing[:])
	mac.Write(hdr[:])
	body := &macTailReader{r: dec, mac: mac}

	var iv [aes.BlockSize]byte
	copy(iv[:], hdr[9:])
	n, err := decryptCBCStream(dst, body, key.encryption[:], &iv, opts)
	if body.readErr != nil {
		return n, tokenReadError(body.readErr)
	}
	if !body.eof {
		// dst refused a write (a G-code gate seeing the garbage of a wrong
		// key, typically). Read the token to its end so that a bad HMAC is
		// reported as such, not as whatever the garbage tripped.
		if _, derr := io.Copy(io.Discard, body); derr != nil {
			return n, tokenReadError(derr)
		}
		if len(body.trailer()) == fernetMACLen && hmac.Equal(mac.Sum(nil), body.trailer()) {
			return n, err
		}
		return n, ErrFernetHMAC
	}
	if len(body.trailer()) < fernetMACLen {
		return n, fmt.Errorf("%w: too short to hold its HMAC", ErrFernetToken)
	}
	if !hmac.Equal(mac.Sum(nil), body.trailer()) {
		return n, ErrFernetHMAC
	}
	if errors.Is(err, ErrEmptyCiphertext) {
		return n, fmt.Errorf("%w: no ciphertext", ErrFernetToken)
	}
	return n, err
}

// tokenReadError tells a Base64 error in the token from a read error of
// the source beneath it.
func tokenReadError(err error) error {
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: not URL-safe Base64 at decoded offset %d", ErrFernetToken, int64(ce))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// The decoder's word for text that ends mid-quantum (a cut token);
		// a source that failed this way is still matched by errors.Is.
		return fmt.Errorf("%w: truncated (%w)", ErrFernetToken, err)
	}
	return err
}

// macTailReader passes the token's ciphertext through while feeding it to
// the HMAC, and withholds the last 32 bytes: the HMAC itself, known to be
// the tail only once the source ends. It stages bytes in a small buffer of
// its own so that it works for reads of any size.
type macTailReader struct {
	r       io.Reader
	mac     hash.Hash
	buf     [fernetMACLen + 4096]byte
	lo, hi  int // buf[lo:hi] is read but not yet passed on
	eof     bool
	readErr error // the source's error, other than EOF
}

func (t *macTailReader) Read(p []byte) (int, error) {
	for t.hi-t.lo <= fernetMACLen && !t.eof {
		if t.lo > 0 {
			t.hi = copy(t.buf[:], t.buf[t.lo:t.hi])
			t.lo = 0
		}
		m, err := t.r.Read(t.buf[t.hi:])
		t.hi += m
		if err == io.EOF {
			t.eof = true
		} else if err != nil {
			t.readErr = err
			return 0, err
		}
	}
	n := copy(p, t.buf[t.lo:t.hi-min(fernetMACLen, t.hi-t.lo)])
	t.mac.Write(p[:n])
	t.lo += n
	if n == 0 && t.eof {
		return 0, io.EOF
	}
	return n, nil
}

// trailer is the token's last 32 bytes (fewer if it was shorter), once the
// source has ended.
func (t *macTailReader) trailer() []byte { return t.buf[t.lo:t.hi] }
