#!/usr/bin/python3
"""Writes the old plugin's key and token files for internal/identity's import tests.

This is an independent implementation of the scheme in
shared/spec/marketplace-api.md ("Migrating"), in Python with Debian's
python3-cryptography and python3-nacl, the libraries the old plugin used.
Run it with Debian's interpreter from this directory:

    /usr/bin/python3 make_legacy_vectors.py

Everything is derived from fixed labels, so re-running reproduces the
committed files byte for byte. Each case directory holds:

    host/            the files the fingerprint reads (proc/cpuinfo, etc/machine-id,
                     proc/sys/kernel/hostname)
    printer_data/lmnt_marketplace/   the old plugin's files
    case.json        the network interfaces the host had, the expected key,
                     and a DEK package (NaCl box) addressed to its public key
"""
import base64
import hashlib
import json
import os
import shutil

import nacl.bindings
import nacl.public
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "legacy")


def det(label, n=32):
    """Deterministic test bytes: not secret, only reproducible."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"lmntd legacy vector {label} {i}".encode()).digest()
        i += 1
    return out[:n]


def fingerprint_password(cpuinfo, machine_id, node, hostname, strip_machine_id=True):
    """The old plugin's hardware fingerprint, as the spec describes it."""
    identifiers = []
    if cpuinfo is not None:
        for line in cpuinfo.splitlines(keepends=True):
            if "Serial" in line or "Hardware" in line:
                identifiers.append(line.strip())
    if machine_id is not None:
        identifiers.append(machine_id.strip() if strip_machine_id else machine_id)
    if node is not None:
        identifiers.append(str(node))
    if not identifiers:
        identifiers.append(hostname)
    return hashlib.sha256("|".join(sorted(identifiers)).encode()).digest()


def encrypt_enc(private_key, password, label):
    salt, iv = det(label + " salt", 32), det(label + " iv", 16)
    key = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=100000).derive(password)
    padder = padding.PKCS7(128).padder()
    data = padder.update(private_key.hex().encode("ascii")) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(data) + enc.finalize()
    return base64.b64encode(salt + iv + ct).decode("ascii")


def dek_package(public_key, label):
    """A marketplace DEK package: B64(ephemeral_pub):B64(nonce):B64(box)."""
    eph = nacl.public.PrivateKey(det(label + " ephemeral"))
    nonce = det(label + " nonce", 24)
    dek = det(label + " dek")
    box = nacl.public.Box(eph, nacl.public.PublicKey(public_key))
    ct = box.encrypt(dek, nonce).ciphertext
    b64 = lambda b: base64.b64encode(b).decode("ascii")
    return b64(bytes(eph.public_key)) + ":" + b64(nonce) + ":" + b64(ct), dek


def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def mac_int(mac):
    return int(mac.replace(":", ""), 16)


def x25519_public(private_key):
    return nacl.bindings.crypto_scalarmult_base(private_key)


def emit(name, description, private_key, interfaces, files, host, extra=None):
    d = os.path.join(OUT, name)
    for rel, content in host.items():
        write(os.path.join(d, "host", rel), content)
    for rel, content in files.items():
        write(os.path.join(d, "printer_data", "lmnt_marketplace", rel), content)
    public = x25519_public(private_key)
    package, dek = dek_package(public, name)
    case = {
        "description": description,
        "interfaces": interfaces,
        "expected": {
            "private_key_hex": private_key.hex(),
            "public_key_b64": base64.b64encode(public).decode("ascii"),
            "key_id": hashlib.sha256(public).hexdigest(),
        },
        "dek_package": package,
        "dek_hex": dek.hex(),
    }
    case.update(extra or {})
    write(os.path.join(d, "case.json"), json.dumps(case, indent=2, sort_keys=True) + "\n")


RPI4_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
    for i in range(4)
) + "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000a3b4c5d6\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"

X86_CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 142\n"
    "model name\t: Intel(R) Core(TM) i5-8259U CPU @ 2.30GHz\nstepping\t: 10\nflags\t\t: fpu vme de pse tsc msr\n\n"
)


def main():
    shutil.rmtree(OUT, ignore_errors=True)

    # 1. A Raspberry Pi 4 on Wi-Fi: eth0 has a MAC but no IPv4 address, so
    #    uuid.getnode() (libuuid: first interface with an IPv4 address and a
    #    non-zero MAC) returned wlan0's MAC. machine-id read stripped.
    key = det("rpi4 enc key")
    machine_id = "3c4d5e6f708192a3b4c5d6e7f8091a2b\n"
    interfaces = [
        {"index": 1, "name": "lo", "mac": "00:00:00:00:00:00", "ipv4": True},
        {"index": 2, "name": "eth0", "mac": "dc:a6:32:01:02:03", "ipv4": False},
        {"index": 3, "name": "wlan0", "mac": "dc:a6:32:01:02:04", "ipv4": True},
    ]
    pw = fingerprint_password(RPI4_CPUINFO, machine_id, mac_int("dc:a6:32:01:02:04"), "printer")
    emit("rpi4-enc-wifi", "Pi 4 on Wi-Fi: .enc bound to cpuinfo Hardware/Serial, stripped machine-id, wlan0 MAC",
         key, interfaces,
         {"tokens/printer_dlt_private_key.enc": encrypt_enc(key, pw, "rpi4") + "\n",
          "tokens/printer_token.json": json.dumps({
              "printer_token": "eyJhbGciOiJIUzI1NiJ9.eyJwcmludGVyX2lkIjoicHJuXzQyIn0.c2lnbmF0dXJl",
              "token_expires": "2026-03-01T12:00:00+00:00",
              "created_at": "2025-12-01T09:30:15.123456",
              "printer_name": "Voron 2.4",
              "printer_id": "prn_42"}, indent=2)},
         {"proc/cpuinfo": RPI4_CPUINFO, "etc/machine-id": machine_id, "proc/sys/kernel/hostname": "voron\n"},
         {"token": {"format": "current", "token": "eyJhbGciOiJIUzI1NiJ9.eyJwcmludGVyX2lkIjoicHJuXzQyIn0.c2lnbmF0dXJl",
                    "expires_at": "2026-03-01T12:00:00Z", "created_at_local": "2025-12-01T09:30:15.123456",
                    "printer_name": "Voron 2.4", "printer_id": "prn_42"}})

    # 2. An x86 box: no Serial/Hardware lines; machine-id taken with its
    #    trailing newline (the spec's "contents of /etc/machine-id"); wired eth0.
    key = det("x86 enc key")
    machine_id = "c5d6e7f8091a2b3c4d5e6f708192a3b4\n"
    interfaces = [
        {"index": 1, "name": "lo", "mac": "00:00:00:00:00:00", "ipv4": True},
        {"index": 2, "name": "enp3s0", "mac": "94:c6:91:aa:bb:cc", "ipv4": True},
        {"index": 3, "name": "docker0", "mac": "02:42:ac:11:00:01", "ipv4": True},
    ]
    pw = fingerprint_password(X86_CPUINFO, machine_id, mac_int("94:c6:91:aa:bb:cc"), "nuc", strip_machine_id=False)
    emit("x86-enc-raw-machine-id", "x86: .enc with no cpuinfo lines, machine-id with its newline, enp3s0 MAC",
         key, interfaces,
         {"tokens/printer_dlt_private_key.enc": encrypt_enc(key, pw, "x86"),
          "tokens/printer_token.json": json.dumps({"token": "legacy.jwt.token", "expiry": "2025-09-30T00:00:00Z"})},
         {"proc/cpuinfo": X86_CPUINFO, "etc/machine-id": machine_id, "proc/sys/kernel/hostname": "nuc\n"},
         {"token": {"format": "legacy", "token": "legacy.jwt.token", "expires_at": "2025-09-30T00:00:00Z"}})

    # 3. A container-like host with nothing readable: the hostname alone.
    key = det("hostname enc key")
    pw = fingerprint_password(None, None, None, "klipper-box")
    emit("hostname-only-enc", ".enc bound to the hostname alone (no cpuinfo, machine-id or MAC)",
         key, [], {"tokens/printer_dlt_private_key.enc": encrypt_enc(key, pw, "hostname")},
         {"proc/sys/kernel/hostname": "klipper-box\n"})

    # 4. Older installs: the key in clear hex, upper-case with a newline.
    key = det("hex key")
    emit("hex", "printer_dlt_private_key.hex: 64 hex digits in clear",
         key, [], {"tokens/printer_dlt_private_key.hex": key.hex().upper() + "\n"}, {})

    key = det("hex clear key")
    emit("hex-clear", "printer_dlt_private_key.hex.clear: 64 hex digits in clear",
         key, [], {"tokens/printer_dlt_private_key.hex.clear": key.hex()}, {})

    # 5. Oldest installs: an Ed25519 seed, converted by libsodium.
    seed = det("ed25519 seed")
    ed_pk, ed_sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    x_sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(ed_sk)
    assert nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed_pk) == x25519_public(x_sk)
    emit("dlt-keypair-json", "keys/dlt_keypair.json: Ed25519 seed converted with crypto_sign_ed25519_sk_to_curve25519",
         x_sk, [], {"keys/dlt_keypair.json": json.dumps({
             "private_key_b64": base64.b64encode(seed).decode("ascii"),
             "public_key_b64": base64.b64encode(ed_pk).decode("ascii")})}, {},
         {"ed25519_seed_hex": seed.hex()})

    # 6. .enc bound to a fingerprint this host no longer has (machine-id
    #    regenerated) next to a clear .hex: the .hex key is imported and the
    #    .enc failure reported.
    key = det("fallback hex key")
    stale = fingerprint_password(RPI4_CPUINFO, "00112233445566778899aabbccddeeff", mac_int("dc:a6:32:01:02:03"), "x")
    emit("enc-stale-with-hex", ".enc undecryptable on this host, .hex present",
         key, [{"index": 2, "name": "eth0", "mac": "dc:a6:32:01:02:03", "ipv4": True}],
         {"tokens/printer_dlt_private_key.enc": encrypt_enc(det("other key"), stale, "stale"),
          "tokens/printer_dlt_private_key.hex": key.hex()},
         {"proc/cpuinfo": RPI4_CPUINFO, "etc/machine-id": "3c4d5e6f708192a3b4c5d6e7f8091a2b\n"})


if __name__ == "__main__":
    main()
