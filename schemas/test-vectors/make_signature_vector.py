#!/usr/bin/env python3
"""Regenerates signature.json with an implementation independent of the Rust code
(pyca/cryptography), so the vector checks the Rust signer rather than echoing it.

The key is RFC 8032 section 7.1 TEST 1 (a published test key, never a real one).
Usage: python3 make_signature_vector.py ENVELOPE.json > signature.json
ENVELOPE.json is a small valid envelope (signature.json uses schemas/referral/1/valid/minimal.json); it is
re-serialised as compact JSON, and those exact bytes are what is signed.
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"

def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_signature_vector.py ENVELOPE.json > signature.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        envelope = json.load(f)
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED_HEX))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    # RFC 8032 TEST 1 known answer: the empty message.
    assert key.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    signature = key.sign(body.encode("utf-8"))
    vector = {
        "description": (
            "ed25519 over the exact UTF-8 bytes of `body` (no trailing newline). Key: RFC 8032 "
            "section 7.1 TEST 1. key_id = hex of the first 8 bytes of SHA-256(public key). "
            "Base64 is standard, with padding."
        ),
        "seed_hex": SEED_HEX,
        "public_key_b64": base64.b64encode(public).decode(),
        "key_id": hashlib.sha256(public).digest()[:8].hex(),
        "body": body,
        "signature_b64": base64.b64encode(signature).decode(),
    }
    json.dump(vector, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
