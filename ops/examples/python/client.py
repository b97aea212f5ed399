#!/usr/bin/python3
"""A referral-broker participant in Python: submit a signed referral, read the inbox.

Written from schemas/README.md and the design's "Wire" section alone, to show that a hotline
that does not use Rust needs nothing else. Dependencies: pika (AMQP 0-9-1) and PyNaCl
(ed25519), e.g. Debian's python3-pika and python3-nacl; Python 3.11+ (tomllib).

    client.py --config participant.toml submit referral.json    # prints the envelope id
    client.py --config participant.toml inbox [--json] [--no-receipt]

It reads the same participant.toml and registry as `referral-broker` (see README.md).
Exit status: 0 ok, 78 bad configuration, 1 anything else.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import ssl
import sys
import time
import tomllib
import uuid

import nacl.exceptions
import nacl.signing
import pika

EXIT_CONFIG = 78
MAX_BODY_BYTES = 262_144


class ConfigError(Exception):
    """participant.toml, the registry or a key file is missing or wrong."""


class Refused(Exception):
    """A delivery that is not genuine."""


# --- configuration, keys, registry ---------------------------------------------------------

def load_config(path):
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        base = os.path.dirname(os.path.abspath(path))
        rel = lambda p: os.path.join(base, p)  # noqa: E731 (absolute paths stay absolute)
        b = raw["broker"]
        return {
            "me": raw["participant"],
            "registry": rel(raw["registry"]),
            "data_dir": rel(raw["data_dir"]),
            "signing_key": rel(raw["signing"]["key"]),
            "host": b.get("host", "localhost"),
            "port": int(b["port"]),
            "vhost": b["vhost"],
            "ca": rel(b["ca"]),
            "cert": rel(b["certificate"]),
            "key": rel(b["key"]),
        }
    except KeyError as e:
        raise ConfigError(f"{path}: missing field {e}") from e
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def utc(value):
    """A registry or wire timestamp (TOML datetime or RFC 3339 string) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def key_id_of(public_key: bytes) -> str:
    """16 lowercase hex: the first 8 bytes of SHA-256 over the 32-byte public key."""
    return hashlib.sha256(public_key).digest()[:8].hex()


def load_registry(path):
    """{'broker': id, 'keys': {key_id: (owner, VerifyKey, not_before, not_after, revoked_at)},
    'names': {id: (name, role, country)}}"""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        keys, names = {}, {}
        for p in raw.get("participant", []):
            names[p["id"]] = (p.get("name", ""), p.get("role", ""), p.get("country"))
            for k in p.get("key", []):
                public = base64.b64decode(k["public_key"], validate=True)
                keys[key_id_of(public)] = (
                    p["id"],
                    nacl.signing.VerifyKey(public),
                    utc(k["not_before"]),
                    utc(k.get("not_after")),
                    utc(k.get("revoked_at")),
                )
        return {"broker": raw["broker"], "keys": keys, "names": names}
    except KeyError as e:
        raise ConfigError(f"{path}: missing field {e}") from e
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def load_signing_key(path):
    try:
        if os.stat(path).st_mode & 0o077:
            raise ConfigError(f"{path}: group or others may read it; it must be mode 0600")
        with open(path) as f:
            seed = base64.b64decode(f.read().strip(), validate=True)
        if len(seed) != 32:
            raise ConfigError(f"{path}: not base64 of a 32-byte seed")
        return nacl.signing.SigningKey(seed)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: {e!r}") from e


# --- the wire --------------------------------------------------------------------------------

def connect(cfg):
    """AMQP over TLS, client certificate, SASL EXTERNAL: the certificate is the identity."""
    context = ssl.create_default_context(cafile=cfg["ca"])  # trust only the network's CA
    context.load_cert_chain(cfg["cert"], cfg["key"])
    params = pika.ConnectionParameters(
        host=cfg["host"],
        port=cfg["port"],
        virtual_host=cfg["vhost"],
        credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context, server_hostname=cfg["host"]),
        heartbeat=10,
    )
    return pika.BlockingConnection(params)


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, random."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((ms & (2**48 - 1)) << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def now_rfc3339() -> str:
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def send(channel, cfg, signing_key, kind, body) -> str:
    """Wraps `body` in an envelope from us, signs the exact bytes, publishes with confirm."""
    envelope = {"kind": kind, "v": 1, "id": uuid7(), "origin": cfg["me"],
                "created_at": now_rfc3339(), "body": body}
    data = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    signature = signing_key.sign(data).signature  # 64 bytes, over the bytes as sent
    properties = pika.BasicProperties(
        content_type="application/json",
        type=kind,
        message_id=envelope["id"],
        user_id=cfg["me"],  # RabbitMQ refuses any other than the authenticated user
        timestamp=int(time.time()),
        delivery_mode=2,
        headers={
            "x-sig": base64.b64encode(signature).decode("ascii"),
            "x-key-id": key_id_of(bytes(signing_key.verify_key)),
        },
    )
    # confirm_delivery() is on: an unroutable or refused message raises.
    channel.basic_publish("ingress", "ingress", data, properties, mandatory=True)
    return envelope["id"]


# --- verifying what arrives ------------------------------------------------------------------

def strict_json(data: bytes):
    """UTF-8 JSON in which no object repeats a key (the contract's rule 4)."""
    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise Refused("undecodable: an object repeats a key")
        return dict(pairs)
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_repeats)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(f"undecodable: {e}") from e


def header_bytes(headers, name):
    value = (headers or {}).get(name)
    return value.encode("utf-8") if isinstance(value, str) else value


def key_valid_at(entry, at):
    _, _, not_before, not_after, revoked_at = entry
    return (not_before <= at and (not_after is None or at < not_after)
            and (revoked_at is None or at < revoked_at))


def verify(registry, me, properties, body: bytes):
    """The origin's signature over the bytes received, then the broker's attestation.
    Returns (envelope, attestation or None); raises Refused."""
    headers = properties.headers or {}
    if len(body) > MAX_BODY_BYTES:
        raise Refused("too_large")
    sig, key_id = header_bytes(headers, "x-sig"), header_bytes(headers, "x-key-id")
    if not sig or not key_id:
        raise Refused("missing_signature: x-sig or x-key-id missing")
    entry = registry["keys"].get(key_id.decode("ascii", "replace"))
    if entry is None:
        raise Refused(f"unknown_key: {key_id!r} is no participant's key in the registry")
    owner, verify_key = entry[0], entry[1]
    try:
        verify_key.verify(body, base64.b64decode(sig, validate=True))
    except (nacl.exceptions.BadSignatureError, ValueError) as e:
        raise Refused(f"bad_signature: does not verify with {owner}'s key") from e
    envelope = strict_json(body)  # only now is the body read
    if envelope.get("origin") != owner:
        raise Refused(f"origin_mismatch: origin {envelope.get('origin')!r}, signed by {owner}")
    if properties.type != envelope.get("kind") or properties.message_id != envelope.get("id"):
        raise Refused("property_mismatch: type/message_id disagree with the envelope")

    attestation, at = None, utc(envelope["created_at"])
    att_bytes = header_bytes(headers, "x-attestation")
    if att_bytes is None and owner != registry["broker"]:
        raise Refused("missing_attestation: a forwarded message must carry the broker's attestation")
    if att_bytes is not None:
        att_sig = header_bytes(headers, "x-attestation-sig") or b""
        att_kid = (header_bytes(headers, "x-attestation-key-id") or b"").decode("ascii", "replace")
        broker_key = registry["keys"].get(att_kid)
        if broker_key is None or broker_key[0] != registry["broker"]:
            raise Refused("bad_attestation: not signed with a key of the broker")
        try:
            broker_key[1].verify(att_bytes, base64.b64decode(att_sig, validate=True))
        except (nacl.exceptions.BadSignatureError, ValueError) as e:
            raise Refused("bad_attestation: the broker's signature does not verify") from e
        attestation = strict_json(att_bytes)
        expected = {"envelope": envelope["id"], "kind": envelope["kind"],
                    "origin": envelope["origin"], "destination": me,
                    "body_sha256": hashlib.sha256(body).hexdigest()}
        for field, value in expected.items():
            if attestation.get(field) != value:
                raise Refused(f"attestation_mismatch: {field} is {attestation.get(field)!r}")
        at = utc(attestation["attested_at"])
        if not key_valid_at(broker_key, at):
            raise Refused("key_not_valid: the broker's key was not valid then")
    if not key_valid_at(entry, at):  # the origin's key, when the broker took the message in
        raise Refused(f"key_not_valid: {owner}'s key was not valid at {at.isoformat()}")
    return envelope, attestation


# --- handed-over ids: at least once on the wire, exactly once to us ---------------------------

class HandedOver:
    def __init__(self, data_dir):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, "python-handed-over.txt")
        self.ids = set()
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.ids = {line.strip() for line in f if line.endswith("\n")}

    def __contains__(self, envelope_id):
        return envelope_id in self.ids

    def record(self, envelope_id):
        with open(self.path, "a") as f:
            f.write(envelope_id + "\n")
            f.flush()
            os.fsync(f.fileno())  # on disk before the ack
        self.ids.add(envelope_id)


# --- commands ----------------------------------------------------------------------------------

def describe(registry, envelope, attestation):
    """A few lines for an analyst."""
    name = registry["names"].get(envelope["origin"], ("", "", None))
    lines = [f"== {envelope['kind'].upper()} {envelope['id']} from {envelope['origin']} "
             f"({name[0]}) — signature verified"
             + (f", attestation #{attestation['audit_seq']} verified" if attestation else "")]
    body = envelope["body"]
    if envelope["kind"] == "referral":
        routed = {i["index"]: i["reasons"] for i in (attestation or {}).get("items", [])}
        lines.append(f"   reference {body['reference']}, priority {body['priority']}")
        for n, item in enumerate(body["items"]):
            if attestation and n not in routed:
                continue
            c = item["classification"]
            lines.append(f"   [{n}] {item['url']} — hosted in {item['hosting']['country']}"
                         f" ({item['hosting']['ip']}); {c['legal_status']} {c['category']};"
                         f" why: {', '.join(routed.get(n, []))}")
    elif envelope["kind"] == "receipt":
        lines.append(f"   referral {body['referral']}: {body['outcome'].upper()}")
    elif envelope["kind"] == "status":
        lines.append(f"   referral {body['referral']} item {body['item']}: "
                     f"{body['state'].upper()} at {body['at']}")
    elif envelope["kind"] == "notice":
        lines.append(f"   {body['code']}: {body['message']}")
    return "\n".join(lines)


def cmd_submit(cfg, registry, signing_key, args):
    with open(args.file, "rb") as f:
        body = strict_json(f.read())
    connection = connect(cfg)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        print(send(channel, cfg, signing_key, args.kind, body))
    finally:
        connection.close()


def cmd_inbox(cfg, registry, signing_key, args):
    handed_over = HandedOver(cfg["data_dir"])
    queue = "inbox." + cfg["me"]
    connection = connect(cfg)
    counts = {"handed_over": 0, "duplicates": 0, "refused": 0, "receipts": 0}
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break  # the inbox is empty
            try:
                envelope, attestation = verify(registry, cfg["me"], properties, body)
            except Refused as why:
                # Never handed over as genuine; dead-lettered to the operator's `parked` queue.
                counts["refused"] += 1
                out = {"event": "refused", "message_id": properties.message_id,
                       "problem": str(why)}
                print(json.dumps(out) if args.json else f"== REFUSED (not genuine): {why}")
                channel.basic_reject(method.delivery_tag, requeue=False)
                continue
            if envelope["id"] in handed_over:
                counts["duplicates"] += 1
                if args.json:
                    print(json.dumps({"event": "duplicate", "id": envelope["id"]}))
                channel.basic_ack(method.delivery_tag)
                continue
            if args.json:
                print(json.dumps({"event": "message", "kind": envelope["kind"],
                                  "id": envelope["id"], "origin": envelope["origin"],
                                  "verified": {"origin_signature": True,
                                               "attestation": attestation is not None},
                                  "envelope": envelope, "attestation": attestation}))
            else:
                print(describe(registry, envelope, attestation))
            sys.stdout.flush()
            if envelope["kind"] == "referral" and not args.no_receipt:
                receipt = send(channel, cfg, signing_key, "receipt",
                               {"referral": envelope["id"], "outcome": "accepted",
                                "received_at": now_rfc3339()})
                counts["receipts"] += 1
                if args.json:
                    print(json.dumps({"event": "receipt_sent", "referral": envelope["id"],
                                      "receipt": receipt}))
            handed_over.record(envelope["id"])  # durable first,
            channel.basic_ack(method.delivery_tag)  # then acknowledged
            counts["handed_over"] += 1
    finally:
        connection.close()
    print(f"{queue}: " + ", ".join(f"{v} {k}" for k, v in counts.items()), file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", default="participant.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("submit", help="sign and send a body (default: a referral)")
    p.add_argument("file")
    p.add_argument("--kind", default="referral",
                   choices=["referral", "retraction", "receipt", "status"])
    p = sub.add_parser("inbox", help="read, verify and acknowledge the inbox until empty")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-receipt", action="store_true")
    args = parser.parse_args()
    try:
        cfg = load_config(args.config)
        registry = load_registry(cfg["registry"])
        signing_key = load_signing_key(cfg["signing_key"])
        entry = registry["keys"].get(key_id_of(bytes(signing_key.verify_key)))
        if entry is None or entry[0] != cfg["me"]:
            raise ConfigError(f"{cfg['signing_key']}: not a registered key of {cfg['me']}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        {"submit": cmd_submit, "inbox": cmd_inbox}[args.command](cfg, registry, signing_key, args)
    except Refused as e:  # a body of ours that is not JSON
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, pika.exceptions.AMQPError) as e:
        print(f"error: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
