//go:build !purego

#include "textflag.h"

// func subWord(w uint32) uint32
// With w in all four columns ShiftRows is the identity, so AESENCLAST with
// a zero round key is SubBytes alone.
TEXT ·subWord(SB), NOSPLIT, $0-12
	MOVL	w+0(FP), AX
	MOVQ	AX, X0
	PSHUFD	$0, X0, X0
	PXOR	X1, X1
	AESENCLAST	X1, X0
	MOVQ	X0, AX
	MOVL	AX, ret+8(FP)
	PXOR	X0, X0
	XORQ	AX, AX
	RET

// func invMixColumns(rk *[16]byte)
TEXT ·invMixColumns(SB), NOSPLIT, $0-8
	MOVQ	rk+0(FP), AX
	MOVOU	(AX), X0
	AESIMC	X0, X0
	MOVOU	X0, (AX)
	PXOR	X0, X0
	RET

// func cbcDecryptAsm(rounds int, dec *byte, iv *[16]byte, dst, src *byte, n int)
//
// X0-X7: eight blocks in flight; X8: the current round key; X9: a
// ciphertext block to chain; X10: the ciphertext block before the current
// group (the IV at first). Every ciphertext block a group needs is loaded
// before the group is stored, so dst may be src.
TEXT ·cbcDecryptAsm(SB), NOSPLIT, $0-48
	MOVQ	rounds+0(FP), CX
	MOVQ	dec+8(FP), DX
	MOVQ	iv+16(FP), R8
	MOVQ	dst+24(FP), DI
	MOVQ	src+32(FP), SI
	MOVQ	n+40(FP), BX
	MOVOU	(R8), X10
	SHLQ	$4, CX			// offset of the last round key

	CMPQ	BX, $128
	JB	tail

loop8:
	MOVOU	(DX), X8
	MOVOU	0(SI), X0
	MOVOU	16(SI), X1
	MOVOU	32(SI), X2
	MOVOU	48(SI), X3
	MOVOU	64(SI), X4
	MOVOU	80(SI), X5
	MOVOU	96(SI), X6
	MOVOU	112(SI), X7
	PXOR	X8, X0
	PXOR	X8, X1
	PXOR	X8, X2
	PXOR	X8, X3
	PXOR	X8, X4
	PXOR	X8, X5
	PXOR	X8, X6
	PXOR	X8, X7
	MOVQ	$16, AX

rounds8:
	MOVOU	(DX)(AX*1), X8
	AESDEC	X8, X0
	AESDEC	X8, X1
	AESDEC	X8, X2
	AESDEC	X8, X3
	AESDEC	X8, X4
	AESDEC	X8, X5
	AESDEC	X8, X6
	AESDEC	X8, X7
	ADDQ	$16, AX
	CMPQ	AX, CX
	JB	rounds8

	MOVOU	(DX)(CX*1), X8
	AESDECLAST	X8, X0
	AESDECLAST	X8, X1
	AESDECLAST	X8, X2
	AESDECLAST	X8, X3
	AESDECLAST	X8, X4
	AESDECLAST	X8, X5
	AESDECLAST	X8, X6
	AESDECLAST	X8, X7

	PXOR	X10, X0
	MOVOU	0(SI), X9
	PXOR	X9, X1
	MOVOU	16(SI), X9
	PXOR	X9, X2
	MOVOU	32(SI), X9
	PXOR	X9, X3
	MOVOU	48(SI), X9
	PXOR	X9, X4
	MOVOU	64(SI), X9
	PXOR	X9, X5
	MOVOU	80(SI), X9
	PXOR	X9, X6
	MOVOU	96(SI), X9
	PXOR	X9, X7
	MOVOU	112(SI), X10

	MOVOU	X0, 0(DI)
	MOVOU	X1, 16(DI)
	MOVOU	X2, 32(DI)
	MOVOU	X3, 48(DI)
	MOVOU	X4, 64(DI)
	MOVOU	X5, 80(DI)
	MOVOU	X6, 96(DI)
	MOVOU	X7, 112(DI)

	ADDQ	$128, SI
	ADDQ	$128, DI
	SUBQ	$128, BX
	CMPQ	BX, $128
	JAE	loop8

tail:
	TESTQ	BX, BX
	JZ	done

loop1:
	MOVOU	(SI), X0
	MOVOU	X0, X9
	MOVOU	(DX), X8
	PXOR	X8, X0
	MOVQ	$16, AX

rounds1:
	MOVOU	(DX)(AX*1), X8
	AESDEC	X8, X0
	ADDQ	$16, AX
	CMPQ	AX, CX
	JB	rounds1

	MOVOU	(DX)(CX*1), X8
	AESDECLAST	X8, X0
	PXOR	X10, X0
	MOVOU	X9, X10
	MOVOU	X0, (DI)
	ADDQ	$16, SI
	ADDQ	$16, DI
	SUBQ	$16, BX
	JNZ	loop1

done:
	// No round key stays behind in a register.
	PXOR	X8, X8
	RET
