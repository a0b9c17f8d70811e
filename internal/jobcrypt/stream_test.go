package jobcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

// encryptCBC is the reference encryptor of these tests (stdlib, one shot).
func encryptCBC(key *[32]byte, iv *[16]byte, pt []byte) []byte {
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	buf := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
	b, _ := aes.NewCipher(key[:])
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(buf, buf)
	return buf
}

// encryptFernet builds a Fernet token as the specification defines it.
func encryptFernet(key *FernetKey, iv *[16]byte, ts uint64, pt []byte) string {
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	ct := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
	b, _ := aes.NewCipher(key.encryption[:])
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(ct, ct)
	msg := []byte{fernetVersion}
	msg = binary.BigEndian.AppendUint64(msg, ts)
	msg = append(append(msg, iv[:]...), ct...)
	m := hmac.New(sha256.New, key.signing[:])
	m.Write(msg)
	return base64.URLEncoding.EncodeToString(m.Sum(msg))
}

func randomKeyIV(t testing.TB) (*[32]byte, *[16]byte) {
	var k [32]byte
	var iv [16]byte
	rand.Read(k[:])
	rand.Read(iv[:])
	return &k, &iv
}

// Large inputs across chunk and segment boundaries, with the parallel path.
func TestDecryptCBCLargeParallel(t *testing.T) {
	key, iv := randomKeyIV(t)
	for _, size := range []int{DefaultChunkSize - 1, DefaultChunkSize, 3*DefaultChunkSize + 5, 5 << 20} {
		pt := make([]byte, size)
		rand.Read(pt)
		ct := encryptCBC(key, iv, pt)
		for _, workers := range []int{1, 2, 4} {
			var out bytes.Buffer
			n, err := DecryptCBC(&out, iotest.HalfReader(bytes.NewReader(ct)), key, iv, StreamOptions{Workers: workers})
			if err != nil || n != int64(size) || !bytes.Equal(out.Bytes(), pt) {
				t.Fatalf("size %d workers %d: err %v n %d equal %v", size, workers, err, n, bytes.Equal(out.Bytes(), pt))
			}
		}
	}
}

// Memory does not grow with the input: decrypting 16 MiB allocates no
// more than decrypting 1 MiB (the buffers are allocated once per stream).
func TestDecryptCBCFixedMemory(t *testing.T) {
	key, iv := randomKeyIV(t)
	allocated := func(size int) uint64 {
		ct := encryptCBC(key, iv, make([]byte, size))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := DecryptCBC(io.Discard, bytes.NewReader(ct), key, iv, StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := allocated(1<<20), allocated(16<<20)
	if large > small+16<<10 {
		t.Fatalf("allocations grow with the input: %d bytes for 1 MiB, %d for 16 MiB", small, large)
	}
}

type failingWriter struct {
	after int
	err   error
	got   int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.got+len(p) > w.after {
		return 0, w.err
	}
	w.got += len(p)
	return len(p), nil
}

// The writer's error is returned as is, and decryption stops.
func TestDecryptCBCWriterError(t *testing.T) {
	key, iv := randomKeyIV(t)
	ct := encryptCBC(key, iv, make([]byte, 1<<20))
	boom := errors.New("sink refuses")
	w := &failingWriter{after: 100 << 10, err: boom}
	src := &countingReader{r: bytes.NewReader(ct)}
	_, err := DecryptCBC(w, src, key, iv, StreamOptions{ChunkSize: 64 << 10, Buffers: 2})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the writer's", err)
	}
	if src.n == int64(len(ct)) {
		t.Fatal("the whole body was read after the writer failed")
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// The reader's error is returned as is (not a ciphertext-length error).
func TestDecryptCBCReaderError(t *testing.T) {
	key, iv := randomKeyIV(t)
	ct := encryptCBC(key, iv, make([]byte, 100000))
	boom := errors.New("connection reset")
	src := io.MultiReader(bytes.NewReader(ct[:50001]), iotest.ErrReader(boom))
	_, err := DecryptCBC(io.Discard, src, key, iv, StreamOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's", err)
	}
}

func TestParseIVHex(t *testing.T) {
	iv, err := ParseIVHex("000102030405060708090a0b0c0d0e0F")
	if err != nil || iv != [16]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} {
		t.Fatalf("iv %x err %v", iv, err)
	}
	for _, bad := range []string{"", "00", "000102030405060708090a0b0c0d0e0", "000102030405060708090a0b0c0d0e0g", "000102030405060708090a0b0c0d0e0f00"} {
		if _, err := ParseIVHex(bad); !errors.Is(err, ErrIV) {
			t.Errorf("%q: err = %v, want ErrIV", bad, err)
		}
	}
}

func TestFernetRoundTripLarge(t *testing.T) {
	var raw [32]byte
	rand.Read(raw[:])
	key, err := ParseFernetKey(base64.URLEncoding.EncodeToString(raw[:]))
	if err != nil {
		t.Fatal(err)
	}
	var iv [16]byte
	pt := make([]byte, 2<<20+3)
	rand.Read(pt)
	tok := encryptFernet(key, &iv, 1, pt)
	var out bytes.Buffer
	if _, err := DecryptFernet(&out, bytes.NewReader([]byte(tok)), key, StreamOptions{}); err != nil || !bytes.Equal(out.Bytes(), pt) {
		t.Fatalf("err %v equal %v", err, bytes.Equal(out.Bytes(), pt))
	}
	// A bad HMAC wins over the (also bad) padding of a cut token.
	raw2, _ := base64.URLEncoding.DecodeString(tok)
	cut := base64.URLEncoding.EncodeToString(raw2[:len(raw2)-16])
	if _, err := DecryptFernet(io.Discard, bytes.NewReader([]byte(cut)), key, StreamOptions{}); !errors.Is(err, ErrFernetHMAC) {
		t.Fatalf("cut token: err = %v, want ErrFernetHMAC", err)
	}
}

// A token whose HMAC verifies but whose plaintext padding is broken comes
// from a broken producer: the padding error is reported.
func TestFernetValidMACBadPadding(t *testing.T) {
	key := &FernetKey{signing: [16]byte{1}, encryption: [16]byte{2}}
	var iv [16]byte
	ct := make([]byte, 32) // decrypts to garbage: padding almost surely bad
	b, _ := aes.NewCipher(key.encryption[:])
	blk := bytes.Repeat([]byte{0x42}, 32)
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(ct, blk)
	msg := append([]byte{fernetVersion, 0, 0, 0, 0, 0, 0, 0, 0}, iv[:]...)
	msg = append(msg, ct...)
	m := hmac.New(sha256.New, key.signing[:])
	m.Write(msg)
	tok := base64.URLEncoding.EncodeToString(m.Sum(msg))
	if _, err := DecryptFernet(io.Discard, bytes.NewReader([]byte(tok)), key, StreamOptions{}); !errors.Is(err, ErrPadding) {
		t.Fatalf("err = %v, want ErrPadding", err)
	}
}

func TestParseFernetKeyErrors(t *testing.T) {
	good := base64.URLEncoding.EncodeToString(make([]byte, 32))
	for _, bad := range []string{"", good[:43], good + "=", "+" + good[1:], base64.URLEncoding.EncodeToString(make([]byte, 31)) + "AAAA"} {
		if _, err := ParseFernetKey(bad); !errors.Is(err, ErrFernetKey) {
			t.Errorf("%q: err = %v, want ErrFernetKey", bad, err)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	aes := &DEK{Kind: DEKAES256}
	fer := &DEK{Kind: DEKFernet}
	cases := []struct {
		prefix string
		dek    *DEK
		want   Format
		err    error
	}{
		{"gAAAAA", fer, FormatFernet, nil},
		{"gAAAAA", nil, 0, ErrFernetNeedsKey},
		{"gAAAAA", aes, FormatCBC, nil}, // a raw key means binary CBC, whatever its first bytes
		{"\x8f\x01\x02\x03\x04\x05", aes, FormatCBC, nil},
		{"; gene", fer, 0, ErrFormatMismatch},
		{"; gene", nil, FormatPlaintext, nil},
		{"", nil, FormatPlaintext, nil},
		{"gAAA", nil, FormatPlaintext, nil},
	}
	for _, c := range cases {
		got, err := DetectFormat([]byte(c.prefix), c.dek)
		if got != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("DetectFormat(%q, %v) = %v, %v; want %v, %v", c.prefix, c.dek, got, err, c.want, c.err)
		}
	}
}

// When the writer refuses the garbage of a wrong key, the verdict is still
// the HMAC's; with a good HMAC the writer's error comes back.
func TestFernetWriterErrorVersusHMAC(t *testing.T) {
	good := &FernetKey{signing: [16]byte{1}, encryption: [16]byte{2}}
	wrong := &FernetKey{signing: [16]byte{3}, encryption: [16]byte{4}}
	tok := encryptFernet(good, &[16]byte{}, 1, make([]byte, 300000))
	refuse := errors.New("gate refuses")
	for _, c := range []struct {
		key  *FernetKey
		want error
	}{{wrong, ErrFernetHMAC}, {good, refuse}} {
		_, err := DecryptFernet(&failingWriter{after: 1000, err: refuse}, bytes.NewReader([]byte(tok)), c.key, StreamOptions{ChunkSize: 4096})
		if !errors.Is(err, c.want) {
			t.Errorf("err = %v, want %v", err, c.want)
		}
	}
}
