//go:build (amd64 || arm64) && !purego

package jobcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// On the machines lmntd ships for (amd64 with AES-NI, arm64 with the
// cryptography extensions) the hardware kernel must be the one in use: a
// detection slip would silently cost most of the decryption throughput.
func TestHardwareKernelSelected(t *testing.T) {
	k, err := newCBCKernel(make([]byte, 32), 2)
	if err != nil {
		t.Fatal(err)
	}
	_, isHW := k.(*hardwareCBC)
	if isHW != hardwareCBCAvailable {
		t.Fatalf("kernel %T, hardware available %v", k, hardwareCBCAvailable)
	}
	t.Logf("hardware AES kernel: %v", isHW)
}

// requireHardwareRefused is what the hardware tests check on a CPU without
// the AES instructions (a Raspberry Pi 4): the kernel refuses every key,
// and streams get crypto/cipher's.
func requireHardwareRefused(t *testing.T) {
	t.Helper()
	for _, n := range []int{16, 24, 32} {
		if _, ok := newHardwareCBC(make([]byte, n)); ok {
			t.Fatalf("hardware kernel built for AES-%d without the CPU instructions", n*8)
		}
	}
	k, err := newCBCKernel(make([]byte, 32), 1)
	if _, std := k.(*stdlibCBC); err != nil || !std {
		t.Fatalf("kernel %T, err %v; want crypto/cipher's", k, err)
	}
}

// stdlibDecrypt is the reference: crypto/cipher, one shot, separate output.
func stdlibDecrypt(key []byte, iv *[16]byte, ct []byte) []byte {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(pt, ct)
	return pt
}

// Differential: random keys of every AES size, IVs and lengths 0..N blocks
// (every length mod 8, as the kernel works in groups of eight), large
// buffers, slices at every alignment, in place and into a separate buffer.
func TestHardwareCBCMatchesStdlib(t *testing.T) {
	if !hardwareCBCAvailable {
		requireHardwareRefused(t)
		return
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	lengths := []int{}
	for blocks := 0; blocks <= 40; blocks++ {
		lengths = append(lengths, blocks*aes.BlockSize)
	}
	lengths = append(lengths, DefaultChunkSize, 1<<20+7*aes.BlockSize, 4<<20+3*aes.BlockSize)
	for _, keyLen := range []int{16, 24, 32} {
		for _, n := range lengths {
			key := make([]byte, keyLen)
			var iv [16]byte
			rand.Read(key)
			rand.Read(iv[:])
			k, ok := newHardwareCBC(key)
			if !ok {
				t.Fatalf("AES-%d key refused", keyLen*8)
			}
			align := rng.IntN(16)
			ct := make([]byte, n+align)[align:]
			rand.Read(ct)
			want := stdlibDecrypt(key, &iv, ct)
			ivBefore := iv
			name := fmt.Sprintf("AES-%d/%d bytes/offset %d", keyLen*8, n, align)

			dstAlign := rng.IntN(16)
			dst := make([]byte, n+dstAlign)[dstAlign:]
			k.decrypt(&iv, dst, ct)
			if !bytes.Equal(dst, want) {
				t.Fatalf("%s, separate dst at offset %d: plaintext differs", name, dstAlign)
			}
			inPlace := bytes.Clone(ct)
			k.decryptBlocks(0, &iv, inPlace)
			if !bytes.Equal(inPlace, want) {
				t.Fatalf("%s, in place: plaintext differs", name)
			}
			if iv != ivBefore {
				t.Fatalf("%s: the IV was modified", name)
			}
			k.wipe()
			if k.dec != [len(k.dec)]byte{} {
				t.Fatalf("%s: key schedule not zeroised", name)
			}
		}
	}
}

// The key expansion against FIPS-197 Appendix A (A.1 AES-128, A.2
// AES-192, A.3 AES-256): the last round key of each encryption schedule.
func TestExpandKeyFIPS197(t *testing.T) {
	if !hardwareCBCAvailable {
		requireHardwareRefused(t)
		return
	}
	for _, c := range []struct{ key, lastRoundKey string }{
		{"2b7e151628aed2a6abf7158809cf4f3c", "d014f9a8c9ee2589e13f0cc8b6630ca6"},
		{"8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "e98ba06f448c773c8ecc720401002202"},
		{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "fe4890d1e6188d0b046df344706c631e"},
	} {
		key := unhex(t, c.key)
		rounds := len(key)/4 + 6
		enc := make([]byte, (rounds+1)*aes.BlockSize)
		expandKey(key, enc)
		if got, want := enc[rounds*aes.BlockSize:], unhex(t, c.lastRoundKey); !bytes.Equal(got, want) {
			t.Errorf("AES-%d: last round key %x, want %x", len(key)*8, got, want)
		}
	}
}

// FuzzCBCKernels: both kernels agree with each other (and the hardware
// one with crypto/cipher) on arbitrary keys, IVs and block counts, in
// place and into a separate buffer.
func FuzzCBCKernels(f *testing.F) {
	f.Add(make([]byte, 32), make([]byte, 16), make([]byte, 16*9), uint8(0))
	f.Add(bytes.Repeat([]byte{0xa5}, 32), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{7}, 16*17+3), uint8(5))
	f.Add(make([]byte, 16), make([]byte, 16), make([]byte, 16*8), uint8(15))
	f.Fuzz(func(t *testing.T, keySeed, ivSeed, data []byte, align uint8) {
		if !hardwareCBCAvailable {
			requireHardwareRefused(t)
			return
		}
		keyLen := []int{16, 24, 32}[len(keySeed)%3]
		key := make([]byte, keyLen)
		copy(key, keySeed)
		var iv [16]byte
		copy(iv[:], ivSeed)
		off := int(align % 16)
		n := len(data) - len(data)%aes.BlockSize
		ct := make([]byte, n+off)[off:]
		copy(ct, data)
		want := stdlibDecrypt(key, &iv, ct)

		hw, ok := newHardwareCBC(key)
		if !ok {
			t.Fatal("key refused")
		}
		defer hw.wipe()
		dst := make([]byte, n)
		hw.decrypt(&iv, dst, ct)
		if !bytes.Equal(dst, want) {
			t.Fatal("hardware kernel, separate dst: differs from crypto/cipher")
		}
		saved := useHardwareCBC
		useHardwareCBC = false
		std, err := newCBCKernel(key, 1)
		useHardwareCBC = saved
		if err != nil {
			t.Fatal(err)
		}
		a, b := bytes.Clone(ct), bytes.Clone(ct)
		hw.decryptBlocks(0, &iv, a)
		std.decryptBlocks(0, &iv, b)
		if !bytes.Equal(a, b) || !bytes.Equal(a, want) {
			t.Fatal("kernels disagree in place")
		}
	})
}

// BenchmarkCBCDecrypt: raw single-core CBC decryption, in place, of 512 KiB
// (the stream's chunk), crypto/cipher against the hardware kernel.
func BenchmarkCBCDecrypt(b *testing.B) {
	var key [32]byte
	var iv [16]byte
	rand.Read(key[:])
	buf := make([]byte, DefaultChunkSize)
	rand.Read(buf)
	b.Run("stdlib", func(b *testing.B) {
		blk, _ := aes.NewCipher(key[:])
		m := cipher.NewCBCDecrypter(blk, iv[:])
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			m.CryptBlocks(buf, buf)
		}
	})
	b.Run("hardware", func(b *testing.B) {
		k, ok := newHardwareCBC(key[:])
		if !ok {
			b.Fatal("no AES instructions on this CPU")
		}
		defer k.wipe()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			k.decryptBlocks(0, &iv, buf)
		}
	})
}
