//go:build (amd64 || arm64) && !purego

package jobcrypt

import (
	"crypto/aes"
	"encoding/binary"
	"math/bits"
)

// maxRounds is AES-256's round count; AES-128 has 10, AES-192 12.
const maxRounds = 14

// hardwareCBC decrypts with the CPU's AES instructions (AES-NI on amd64,
// the ARMv8 cryptography extensions on arm64), eight blocks at a time: CBC
// decryption has no dependency between blocks, so eight independent
// AESDEC chains hide the instruction's latency, as openssl does. Unlike
// crypto/aes's, its key schedule is ours to zeroise.
type hardwareCBC struct {
	rounds int
	// dec is the equivalent inverse cipher's schedule (FIPS-197 §5.3.5):
	// round keys in decryption order, the inner ones through InvMixColumns.
	dec [(maxRounds + 1) * aes.BlockSize]byte
}

// newHardwareCBC expands key for the hardware kernel; ok is false when the
// CPU lacks the instructions or the key length is not an AES one.
func newHardwareCBC(key []byte) (*hardwareCBC, bool) {
	if !hardwareCBCAvailable {
		return nil, false
	}
	nk := len(key) / 4
	if len(key) != 16 && len(key) != 24 && len(key) != 32 {
		return nil, false
	}
	k := &hardwareCBC{rounds: nk + 6}
	var enc [(maxRounds + 1) * aes.BlockSize]byte
	expandKey(key, enc[:(k.rounds+1)*aes.BlockSize])
	invertKeySchedule(k.rounds, &enc, &k.dec)
	clear(enc[:])
	return k, true
}

// expandKey is the FIPS-197 §5.2 key expansion into enc, round keys in
// byte order; SubWord runs on the AES instructions, so the expansion does
// no secret-dependent table lookup.
func expandKey(key, enc []byte) {
	nk := len(key) / 4
	copy(enc, key)
	rcon := uint32(1)
	for i := nk; i < len(enc)/4; i++ {
		t := binary.BigEndian.Uint32(enc[4*(i-1):])
		switch {
		case i%nk == 0:
			t = subWord(bits.RotateLeft32(t, 8)) ^ rcon<<24
			rcon = xtime(rcon)
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		binary.BigEndian.PutUint32(enc[4*i:], binary.BigEndian.Uint32(enc[4*(i-nk):])^t)
	}
}

// xtime multiplies by x in GF(2^8) (the next round constant).
func xtime(b uint32) uint32 {
	b <<= 1
	if b&0x100 != 0 {
		b ^= 0x11b
	}
	return b
}

// invertKeySchedule derives the equivalent inverse cipher's schedule:
// encryption round keys in reverse order, InvMixColumns applied to all but
// the first and last.
func invertKeySchedule(rounds int, enc, dec *[(maxRounds + 1) * aes.BlockSize]byte) {
	const bs = aes.BlockSize
	for i := 0; i <= rounds; i++ {
		rk := (*[bs]byte)(dec[i*bs:])
		copy(rk[:], enc[(rounds-i)*bs:])
		if i != 0 && i != rounds {
			invMixColumns(rk)
		}
	}
}

func (k *hardwareCBC) decryptBlocks(_ int, iv *[aes.BlockSize]byte, seg []byte) {
	k.decrypt(iv, seg, seg)
}

// decrypt decrypts src into dst, chained to iv; dst and src are the same
// slice or do not overlap, and hold whole blocks.
func (k *hardwareCBC) decrypt(iv *[aes.BlockSize]byte, dst, src []byte) {
	if len(src)%aes.BlockSize != 0 || len(dst) < len(src) {
		panic("jobcrypt: CBC input is not whole blocks or output is short")
	}
	if len(src) == 0 {
		return
	}
	cbcDecryptAsm(k.rounds, &k.dec[0], iv, &dst[0], &src[0], len(src))
}

func (k *hardwareCBC) wipe() { clear(k.dec[:]) }

// subWord applies the AES S-box to each byte of w.
//
//go:noescape
func subWord(w uint32) uint32

// invMixColumns applies AES InvMixColumns to the round key rk in place.
//
//go:noescape
func invMixColumns(rk *[aes.BlockSize]byte)

// cbcDecryptAsm CBC-decrypts n bytes (whole blocks) from src to dst, which
// are the same or disjoint, with the decryption schedule dec of rounds
// rounds, chained to *iv (left unchanged).
//
//go:noescape
func cbcDecryptAsm(rounds int, dec *byte, iv *[aes.BlockSize]byte, dst, src *byte, n int)
