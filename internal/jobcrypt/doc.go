// Package jobcrypt decrypts print jobs: it opens the DEK package the
// marketplace wraps for one printer, decrypts AES-256-CBC/PKCS#7 and Fernet
// bodies as streams in fixed memory, and tells the formats apart.
//
// It only decrypts: it never inspects the plaintext (package gcode does) and
// never decides where it goes (package pipeline does). CBC carries no MAC, so
// a wrong key produces garbage that only the padding check and the G-code
// gate can catch; the stream functions therefore hand plaintext to their
// writer before they know the whole body is good, and every caller must
// discard what was written when they return an error.
package jobcrypt
