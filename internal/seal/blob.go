package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// Backend blobs are binary: a common header, backend parameters, then the
// AES-256-GCM nonce and ciphertext. Everything before the nonce is the GCM
// associated data, so no header field (backend, PCR selection, sealed TPM
// object, identity sources) can be changed without the blob failing to open.
//
//	"LMNTSEAL" | version u8 | backend u8 | backend parameters... | nonce[12] | ciphertext+tag
const (
	blobMagic   = "LMNTSEAL"
	blobVersion = 1

	blobTagTPM      = 1
	blobTagSoftware = 2
)

// blobWriter builds a blob header.
type blobWriter struct{ buf []byte }

func newBlobWriter(tag byte) *blobWriter {
	w := &blobWriter{buf: make([]byte, 0, 512)}
	w.buf = append(w.buf, blobMagic...)
	w.buf = append(w.buf, blobVersion, tag)
	return w
}

func (w *blobWriter) u8(v byte)    { w.buf = append(w.buf, v) }
func (w *blobWriter) u16(v uint16) { w.buf = binary.BigEndian.AppendUint16(w.buf, v) }
func (w *blobWriter) raw(b []byte) { w.buf = append(w.buf, b...) }
func (w *blobWriter) bytes8(b []byte) {
	w.u8(byte(len(b)))
	w.raw(b)
}
func (w *blobWriter) bytes16(b []byte) {
	w.u16(uint16(len(b)))
	w.raw(b)
}

// seal appends nonce and ciphertext, using everything so far as AAD.
func (w *blobWriter) seal(key, plaintext []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aad := w.buf
	out := append(append([]byte(nil), aad...), nonce...)
	return aead.Seal(out, nonce, plaintext, aad), nil
}

// blobReader parses a blob header; any shortfall is ErrCorrupt.
type blobReader struct {
	b   []byte
	off int
	err error
}

func newBlobReader(blob []byte, tag byte) (*blobReader, error) {
	r := &blobReader{b: blob}
	if string(r.raw(len(blobMagic))) != blobMagic || r.err != nil {
		return nil, fmt.Errorf("%w: not an lmntd sealed blob", ErrCorrupt)
	}
	if v := r.u8(); v != blobVersion {
		if r.err != nil {
			return nil, r.err
		}
		return nil, fmt.Errorf("%w: blob version %d", ErrUnsupportedVersion, v)
	}
	if got := r.u8(); got != tag {
		return nil, fmt.Errorf("%w: blob made by backend %d, expected %d", ErrCorrupt, got, tag)
	}
	return r, r.err
}

func (r *blobReader) raw(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: truncated at byte %d", ErrCorrupt, r.off)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *blobReader) u8() byte {
	v := r.raw(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *blobReader) u16() uint16 {
	v := r.raw(2)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

func (r *blobReader) bytes8() []byte  { return r.raw(int(r.u8())) }
func (r *blobReader) bytes16() []byte { return r.raw(int(r.u16())) }

// open decrypts the rest of the blob with key; the header read so far is the AAD.
// A failed tag is reported as failure (the caller decides what it means).
func (r *blobReader) open(key []byte) ([]byte, bool, error) {
	if r.err != nil {
		return nil, false, r.err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, false, err
	}
	aad := r.b[:r.off]
	nonce := r.raw(aead.NonceSize())
	if r.err != nil || len(r.b)-r.off < aead.Overhead() {
		return nil, false, fmt.Errorf("%w: truncated ciphertext", ErrCorrupt)
	}
	plain, err := aead.Open(nil, nonce, r.b[r.off:], aad)
	return plain, err == nil, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
