package jobcrypt

import (
	"crypto/aes"
	"crypto/cipher"
)

// cbcKernel decrypts CBC segments of one stream in place. A stream splits
// each chunk into segments decrypted concurrently (see parallelCBC); each
// concurrent call uses its own lane, numbered from 0 to the lane count the
// kernel was made for.
type cbcKernel interface {
	// decryptBlocks decrypts seg (whole blocks) in place, chained to iv,
	// which it does not modify.
	decryptBlocks(lane int, iv *[aes.BlockSize]byte, seg []byte)
	// wipe zeroises the key material the kernel holds, as far as it can.
	wipe()
}

// useHardwareCBC selects the AES-instruction kernel where the CPU has one
// (cbcdec_hw.go). Tests clear it to cover the crypto/cipher kernel too.
var useHardwareCBC = hardwareCBCAvailable

// newCBCKernel returns the fastest kernel available for an AES key of 16,
// 24 or 32 bytes, for lanes concurrent segments. The caller wipes it when
// the stream ends.
func newCBCKernel(key []byte, lanes int) (cbcKernel, error) {
	if useHardwareCBC {
		if k, ok := newHardwareCBC(key); ok {
			return k, nil
		}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	k := &stdlibCBC{modes: make([]cipher.BlockMode, lanes)}
	for i := range k.modes {
		k.modes[i] = cipher.NewCBCDecrypter(block, make([]byte, aes.BlockSize))
	}
	return k, nil
}

// stdlibCBC is the portable kernel: crypto/cipher's CBC decrypter, one per
// lane, re-aimed at each segment's IV. Its key schedule lives inside
// crypto/aes, out of reach of wipe.
type stdlibCBC struct {
	modes []cipher.BlockMode
}

// ivSetter is implemented by the standard library's CBC modes.
type ivSetter interface{ SetIV([]byte) }

func (k *stdlibCBC) decryptBlocks(lane int, iv *[aes.BlockSize]byte, seg []byte) {
	m := k.modes[lane]
	m.(ivSetter).SetIV(iv[:])
	m.CryptBlocks(seg, seg)
}

func (k *stdlibCBC) wipe() {}
