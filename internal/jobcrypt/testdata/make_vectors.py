#!/usr/bin/python3
"""Known-answer vectors for internal/jobcrypt, made with an implementation
independent of Go's: Debian's python3-nacl (libsodium) and
python3-cryptography (OpenSSL).

Run: /usr/bin/python3 internal/jobcrypt/testdata/make_vectors.py > internal/jobcrypt/testdata/vectors.json

Every input is derived from fixed labels, so the output is reproducible:
rerunning the script must leave vectors.json unchanged. Other packages
(the marketplace simulator) read vectors.json: keep the field names stable.
"""
import base64
import hashlib
import json
import sys

import nacl.bindings
from nacl.public import Box, PrivateKey, PublicKey
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SCHEMA = {
    "id": "lmntd-jobcrypt-vectors/1",
    "made_by": "internal/jobcrypt/testdata/make_vectors.py (python3-nacl %s, python3-cryptography %s)",
    "encoding": "*_hex: lowercase hex; *_b64: standard Base64 with padding; fernet keys and tokens: URL-safe Base64 as Fernet writes them; package: the DEK package string exactly as the marketplace sends it",
    "dek_packages": "valid packages: {name, recipient_private_hex, recipient_public_b64, ephemeral_private_hex, ephemeral_public_b64, nonce_b64, dek_kind ('aes256'|'fernet'), dek_hex (the box plaintext as bytes), package}. The box is crypto_box(dek, nonce, recipient_public, ephemeral_private); the box segment includes the 16-byte Poly1305 tag.",
    "dek_package_errors": "malformed packages: {name, recipient_private_hex, package, error, segment?}; error is one of segment_count, base64 (segment: ephemeral_public_key|nonce|box), public_key_length, nonce_length, auth, dek_length",
    "cbc": "AES-256-CBC/PKCS#7: {name, key_hex, iv_hex, plaintext_b64, ciphertext_b64}",
    "cbc_errors": "{name, key_hex, iv_hex, ciphertext_b64, error}; error is one of empty, length, padding",
    "fernet": "{name, key, timestamp, iv_hex, plaintext_b64, token}",
    "fernet_errors": "{name, key, token, error}; error is one of key, token, version, hmac",
}


def derive(label, n):
    """n deterministic bytes for a label (SHA-256 in counter mode)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"lmntd-vectors/%s/%d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def b64(b):
    return base64.b64encode(b).decode()


def package_parts(name, dek, recipient_seed="recipient"):
    rpriv = PrivateKey(derive(recipient_seed, 32))
    epriv = PrivateKey(derive(name + "/ephemeral", 32))
    nonce = derive(name + "/nonce", 24)
    boxed = Box(epriv, rpriv.public_key).encrypt(dek, nonce).ciphertext
    return rpriv, epriv, nonce, boxed


def dek_package(name, dek, kind):
    rpriv, epriv, nonce, boxed = package_parts(name, dek)
    # Independent check: libsodium's crypto_box_open with the recipient key.
    assert nacl.bindings.crypto_box_open(boxed, nonce, bytes(epriv.public_key), bytes(rpriv)) == dek
    return {
        "name": name,
        "recipient_private_hex": bytes(rpriv).hex(),
        "recipient_public_b64": b64(bytes(rpriv.public_key)),
        "ephemeral_private_hex": bytes(epriv).hex(),
        "ephemeral_public_b64": b64(bytes(epriv.public_key)),
        "nonce_b64": b64(nonce),
        "dek_kind": kind,
        "dek_hex": dek.hex(),
        "package": "%s:%s:%s" % (b64(bytes(epriv.public_key)), b64(nonce), b64(boxed)),
    }


def dek_package_errors():
    rpriv = PrivateKey(derive("recipient", 32))
    good = dek_package("for-errors", derive("for-errors/dek", 32), "aes256")
    pub, nonce, boxed = good["package"].split(":")
    raw_box = bytearray(base64.b64decode(boxed))
    raw_box[5] ^= 0x01
    _, e16, n16, box16 = package_parts("dek-16-bytes", derive("dek16", 16))
    _, e48, n48, box48 = package_parts("dek-48-bytes", derive("dek48", 48))
    other = PrivateKey(derive("another-printer", 32))

    def case(name, package, error, segment=None, priv=rpriv):
        c = {"name": name, "recipient_private_hex": bytes(priv).hex(), "package": package, "error": error}
        if segment:
            c["segment"] = segment
        return c

    return [
        case("two segments", pub + ":" + nonce, "segment_count"),
        case("four segments", good["package"] + ":" + nonce, "segment_count"),
        case("empty string", "", "segment_count"),
        case("url-safe '-' in public key", "-" + pub[1:] + ":" + nonce + ":" + boxed, "base64", "ephemeral_public_key"),
        case("nonce with a '!'", pub + ":" + nonce[:-1] + "!" + ":" + boxed, "base64", "nonce"),
        case("box with a space", pub + ":" + nonce + ":" + boxed[:10] + " " + boxed[10:], "base64", "box"),
        case("31-byte public key", b64(base64.b64decode(pub)[:31]) + ":" + nonce + ":" + boxed, "public_key_length"),
        case("23-byte nonce", pub + ":" + b64(base64.b64decode(nonce)[:23]) + ":" + boxed, "nonce_length"),
        case("flipped box bit", pub + ":" + nonce + ":" + b64(bytes(raw_box)), "auth"),
        case("box shorter than its tag", pub + ":" + nonce + ":" + b64(b"\x00" * 15), "auth"),
        case("wrong printer key", good["package"], "auth", priv=other),
        case("16-byte DEK", "%s:%s:%s" % (b64(bytes(e16.public_key)), b64(n16), b64(box16)), "dek_length"),
        case("48-byte DEK", "%s:%s:%s" % (b64(bytes(e48.public_key)), b64(n48), b64(box48)), "dek_length"),
    ]


def cbc_encrypt(key, iv, pt):
    p = padding.PKCS7(128).padder()
    padded = p.update(pt) + p.finalize()
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(padded) + e.finalize()


def cbc_raw(key, iv, blocks):
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(blocks) + e.finalize()


# A G-code excerpt as PrusaSlicer lays it out (header comments, start
# sequence, the first moves of a layer), written for these vectors.
GCODE_EXCERPT = """; generated by PrusaSlicer 2.5.0 on 2026-11-27 at 12:00:00 UTC
;

; external perimeters extrusion width = 0.45mm
; perimeters extrusion width = 0.45mm
; first layer extrusion width = 0.42mm

M73 P0 R23
M201 X1000 Y1000 Z200 E5000 ; sets maximum accelerations, mm/sec^2
M203 X200 Y200 Z12 E120 ; sets maximum feedrates, mm / sec
M204 P1250 R1250 T1250 ; sets acceleration (P, T) and retract acceleration (R), mm/sec^2
M205 X8.00 Y8.00 Z0.40 E4.50 ; sets the jerk limits, mm/sec
M107
;TYPE:Custom
M862.3 P "MK3S" ; printer model check
G90 ; use absolute coordinates
M83 ; extruder relative mode
M104 S215 ; set extruder temp
M140 S60 ; set bed temp
M190 S60 ; wait for bed temp
M109 S215 ; wait for extruder temp
G28 W ; home all without mesh bed level
G80 ; mesh bed leveling
G1 Z0.2 F720
G1 Y-3 F1000 ; go outside print area
G92 E0
G1 X60 E9 F1000 ; intro line
G1 X100 E12.5 F1000 ; intro line
G92 E0
G21 ; set units to millimeters
;LAYER_CHANGE
;Z:0.2
;HEIGHT:0.2
;BEFORE_LAYER_CHANGE
G92 E0.0
;0.2
G1 E-.8 F2100
;AFTER_LAYER_CHANGE
;0.2
G1 X115.121 Y95.121 F10800
G1 Z.2 F720
G1 E.8 F2100
;TYPE:Perimeter
;WIDTH:0.449999
G1 F1200
G1 X115.121 Y114.879 E.67117
G1 X94.879 Y114.879 E.68762
G1 X94.879 Y95.121 E.67117
G1 X115.061 Y95.121 E.68558
; stop printing object cube id:0 copy 0
"""


def cbc_cases():
    key = derive("cbc/key", 32)
    iv = derive("cbc/iv", 16)
    cases = []
    for n in (0, 1, 15, 16, 17, 31, 32, 33):
        pt = derive("cbc/pt/%d" % n, n)
        cases.append({"name": "%d bytes" % n, "key_hex": key.hex(), "iv_hex": iv.hex(),
                      "plaintext_b64": b64(pt), "ciphertext_b64": b64(cbc_encrypt(key, iv, pt))})
    for n in (4096, 33333):
        pt = derive("cbc/pt/%d" % n, n)
        k, i = derive("cbc/key/%d" % n, 32), derive("cbc/iv/%d" % n, 16)
        cases.append({"name": "%d bytes" % n, "key_hex": k.hex(), "iv_hex": i.hex(),
                      "plaintext_b64": b64(pt), "ciphertext_b64": b64(cbc_encrypt(k, i, pt))})
    pt = GCODE_EXCERPT.encode()
    cases.append({"name": "gcode excerpt", "key_hex": key.hex(), "iv_hex": iv.hex(),
                  "plaintext_b64": b64(pt), "ciphertext_b64": b64(cbc_encrypt(key, iv, pt))})
    return cases


def cbc_error_cases():
    key = derive("cbc/key", 32)
    iv = derive("cbc/iv", 16)
    good = cbc_encrypt(key, iv, derive("cbc/pt/40", 40))
    wrong_key = derive("cbc/wrong-key", 32)
    # Last block decrypts to ... 0x03 0x02: a pad byte that disagrees.
    bad_tail = cbc_raw(key, iv, derive("cbc/pt/bad", 30) + b"\x03\x02")
    zero_pad = cbc_raw(key, iv, derive("cbc/pt/zero", 31) + b"\x00")
    big_pad = cbc_raw(key, iv, derive("cbc/pt/big", 31) + b"\x11")

    def case(name, ct, err, k=key):
        return {"name": name, "key_hex": k.hex(), "iv_hex": iv.hex(), "ciphertext_b64": b64(ct), "error": err}

    # With a wrong key the padding is garbage; this key was chosen by the
    # label so that it is (checked below), as 255 in 256 keys are.
    wrong = case("wrong key", good, "padding", wrong_key)
    d = Cipher(algorithms.AES(wrong_key), modes.CBC(iv)).decryptor()
    last = (d.update(good) + d.finalize())[-16:]
    n = last[-1]
    assert not (1 <= n <= 16 and last[-n:] == bytes([n]) * n), "pick another wrong-key label"
    return [
        case("empty", b"", "empty"),
        case("15 bytes", good[:15], "length"),
        case("truncated by 7 bytes", good[:-7], "length"),
        case("pad bytes disagree", bad_tail, "padding"),
        case("zero pad byte", zero_pad, "padding"),
        case("pad byte 17", big_pad, "padding"),
        wrong,
    ]


def fernet_cases():
    key = base64.urlsafe_b64encode(derive("fernet/key", 32)).decode()
    f = Fernet(key)
    cases = []
    for name, pt in (("empty", b""), ("short", b"G28\n"), ("gcode excerpt", GCODE_EXCERPT.encode()),
                     ("5000 bytes", derive("fernet/pt/5000", 5000))):
        iv = derive("fernet/iv/" + name, 16)
        ts = 1700000000 + len(pt)
        token = f._encrypt_from_parts(pt, ts, iv).decode()
        assert f.decrypt(token.encode()) == pt
        cases.append({"name": name, "key": key, "timestamp": ts, "iv_hex": iv.hex(),
                      "plaintext_b64": b64(pt), "token": token})
    return cases


def fernet_error_cases():
    key = base64.urlsafe_b64encode(derive("fernet/key", 32)).decode()
    other = base64.urlsafe_b64encode(derive("fernet/other-key", 32)).decode()
    f = Fernet(key)
    token = f._encrypt_from_parts(b"G28\nG1 X10 Y10\n", 1700000000, derive("fernet/iv/err", 16))
    raw = bytearray(base64.urlsafe_b64decode(token))
    mac_flip = bytearray(raw)
    mac_flip[-1] ^= 1
    ct_flip = bytearray(raw)
    ct_flip[30] ^= 1
    v81 = bytearray(raw)
    v81[0] = 0x81

    def enc(b):
        return base64.urlsafe_b64encode(bytes(b)).decode()

    def case(name, tok, err, k=key):
        return {"name": name, "key": k, "token": tok, "error": err}

    return [
        case("flipped HMAC bit", enc(mac_flip), "hmac"),
        case("flipped ciphertext bit", enc(ct_flip), "hmac"),
        case("wrong key", token.decode(), "hmac", other),
        case("version 0x81", enc(v81), "version"),
        case("header only", enc(raw[:25]), "token"),
        case("truncated HMAC", enc(raw[:-5]), "hmac"),
        case("standard base64 alphabet", token.decode()[:20] + "+/" + token.decode()[22:], "token"),
        case("key too short", token.decode(), "key", key[:43]),
        case("key not base64", token.decode(), "key", "!" + key[1:]),
    ]


def main():
    import nacl
    import cryptography
    schema = dict(SCHEMA)
    schema["made_by"] = schema["made_by"] % (nacl.__version__, cryptography.__version__)
    fernet_key = base64.urlsafe_b64encode(derive("fernet/key", 32))
    out = {
        "schema": schema,
        "dek_packages": [
            dek_package("aes256 dek", derive("dek/aes256", 32), "aes256"),
            dek_package("second aes256 dek", derive("dek/aes256/2", 32), "aes256"),
            dek_package("fernet key dek", fernet_key, "fernet"),
        ],
        "dek_package_errors": dek_package_errors(),
        "cbc": cbc_cases(),
        "cbc_errors": cbc_error_cases(),
        "fernet": fernet_cases(),
        "fernet_errors": fernet_error_cases(),
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
