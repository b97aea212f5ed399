#!/usr/bin/python3
"""ops/demo's helper: builds synthetic referral bodies, reads a participant's inbox with
`referral-broker inbox --json` and tells in plain words what arrived, sends a referral whose
bytes were changed after signing, and reads the operators' status.

Every subcommand CHECKS what it reports: it exits 1 (saying why) when what it expected did not
happen, so ops/demo never prints a success it did not see. Only the standard library, plus
PyNaCl and pika for `tampered` (Debian: python3-nacl, python3-pika); run it with
/usr/bin/python3 (Python 3.11+, for tomllib).

    demo.py referral --out F --reference R --report-at T [--urgent] --item URL COUNTRY IP …
    demo.py inbox --bin B --config C --registry R --sent DIR [--expect SPEC]… [--forbid ID]…
    demo.py tampered --config C --body F
    demo.py status --file F [--expect-quarantine N] [--expect-removed COUNTRY]…

Inbox expectations (SPEC), all matched against verified messages only:
    referral:ID:0,1           the referral ID, with the broker attesting exactly items 0 and 1
    receipt:REFERRAL:FROM     a receipt for REFERRAL from participant FROM
    status:REFERRAL:ITEM:STATE
    notice:CODE:ABOUT         a broker notice with reason CODE about envelope ABOUT (-: about none)
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import tomllib
import uuid

COUNTRIES = {"FR": "France", "DE": "Germany", "NL": "the Netherlands", "BE": "Belgium"}
REASONS = {
    "explicit": "named by the sender",
    "country": "hosting country",
    "fallback": "fallback hotline",
    "urgent_lea": "urgent: copy to the police",
    "copy_rule": "copy rule",
}
STATES = {
    "received": "received",
    "takedown_requested": "takedown requested from the host",
    "removed": "REMOVED",
    "not_found": "not found (already gone)",
    "disputed": "disputed",
    "forwarded_to_lea": "forwarded to law enforcement",
    "unable_to_act": "unable to act",
}
INDENT = "      "


class Failed(Exception):
    """What the demo expected did not happen."""


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds):
    """2 days 3 hours, 5 minutes, 40 seconds: the two largest units."""
    seconds = int(seconds)
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {name}{'s' if n != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


class Names:
    """Participant ids → plain words, from the registry."""

    def __init__(self, registry_file):
        with open(registry_file, "rb") as f:
            raw = tomllib.load(f)
        self.broker = raw["broker"]
        self.entries = {p["id"]: p for p in raw.get("participant", [])}

    def __call__(self, pid):
        p = self.entries.get(pid)
        if p is None:
            return pid
        if pid == self.broker:
            return "the broker"
        return f"the {p['name']}"


# --- referral bodies ---------------------------------------------------------------------------

def cmd_referral(args):
    report = parse_time(args.report_at)
    items = []
    for url, country, ip in args.item:
        items.append({
            "url": url,
            "site_type": "image_host",
            "third_party_hosted": False,
            "media_type": "image",
            # Random: a synthetic hash of nothing real.
            "hashes": [{"algorithm": "sha256", "value": secrets.token_hex(32)}],
            "classification": {
                "legal_status": "baseline",
                "assessing_jurisdiction": args.assessed_in,
                "category": "csam",
                "victim_age_group": "prepubescent",
                "victim_gender": "female",
            },
            "hosting": {"ip": ip, "country": country},
            "assessed_at": rfc3339(report + datetime.timedelta(hours=2)),
        })
    body = {
        "reference": args.reference,
        "public_report_received_at": rfc3339(report),
        "priority": "urgent" if args.urgent else "normal",
        "items": items,
    }
    if args.urgent:
        body["escalation_reason"] = ("The images suggest ongoing abuse of a child who may be "
                                     "identifiable (synthetic demo data).")
    with open(args.out, "w") as f:
        json.dump(body, f, indent=2)
        f.write("\n")


# --- inbox -------------------------------------------------------------------------------------

def parse_spec(spec):
    parts = spec.split(":")
    kind = parts[0]
    want = {"referral": 3, "receipt": 3, "status": 4, "notice": 3}
    if kind not in want or len(parts) != want[kind]:
        raise SystemExit(f"demo.py: bad --expect {spec!r}")
    return parts


def matches(spec, msg):
    env, att = msg["envelope"], msg.get("attestation") or {}
    body = env["body"]
    kind = spec[0]
    if env["kind"] != kind:
        return False
    if kind == "referral":
        items = [int(i) for i in spec[2].split(",")]
        return env["id"] == spec[1] and [i["index"] for i in att.get("items", [])] == items
    if kind == "receipt":
        return body["referral"] == spec[1] and env["origin"] == spec[2]
    if kind == "status":
        return (body["referral"] == spec[1] and body["item"] == int(spec[2])
                and body["state"] == spec[3])
    if kind == "notice":
        # ABOUT "-": a notice about no envelope (e.g. bad_signature: the id of a message whose
        # signature fails is not believed, so the broker does not repeat it).
        return body["code"] == spec[1] and body.get("about") == (None if spec[2] == "-" else spec[2])
    return False


def load_sent(sent_dir, envelope_id):
    """A referral this demo sent (ops/demo keeps each body as <sent>/<envelope id>.json)."""
    try:
        with open(os.path.join(sent_dir, envelope_id + ".json")) as f:
            return json.load(f)
    except OSError:
        return None


def routed_words(items):
    """items 0, 1 (hosting country); item 2 (urgent: copy to the police)"""
    groups = {}
    for i in items:
        groups.setdefault(tuple(i["reasons"]), []).append(str(i["index"]))
    return "; ".join(
        f"item{'s' if len(idx) > 1 else ''} {', '.join(idx)} "
        f"({', '.join(REASONS.get(r, r) for r in reasons)})"
        for reasons, idx in groups.items())


def tell(me, msg, names, sent_dir):
    """What arrived, for an analyst. Returns the lines."""
    env, att, verified = msg["envelope"], msg.get("attestation"), msg["verified"]
    body, origin = env["body"], env["origin"]
    who = names(me)
    kind = env["kind"]
    head = "   ▸ "
    if kind == "checkpoint":
        return [f"{head}{who} also receives the broker's signed checkpoint (audit log size "
                f"{body['size']}, signature valid), kept in inbox-{me}.jsonl"]
    out = []
    if kind == "referral":
        urgent = "an URGENT" if body["priority"] == "urgent" else "a"
        out.append(f"{head}{who} receives {urgent} referral, {body['reference']}, "
                   f"from {names(origin)}")
    elif kind == "receipt":
        ref = load_sent(sent_dir, body["referral"])
        label = ref["reference"] if ref else body["referral"]
        out.append(f"{head}{who} receives {names(origin)}'s receipt for {label}: "
                   f"{body['outcome'].upper()}")
    elif kind == "status":
        ref = load_sent(sent_dir, body["referral"])
        item = body["item"]
        label = f"{ref['reference']} item {item}" if ref else f"item {item}"
        out.append(f"{head}{who} receives a status from {names(origin)} for {label}: "
                   f"{STATES.get(body['state'], body['state'])}")
        line = f"{INDENT}at {body['at']}"
        if ref:
            line = f"{INDENT}{ref['items'][item]['url']} at {body['at']}"
            if body["state"] == "removed":
                took = parse_time(body["at"]) - parse_time(ref["public_report_received_at"])
                line += f": {span(took.total_seconds())} after the public report"
        out.append(line)
    elif kind == "notice":
        out.append(f"{head}{who} receives a notice from the broker: {body['code']}")
        out.append(f"{INDENT}“{body['message']}”")
        if body.get("detail"):
            out.append(f"{INDENT}detail: {body['detail']}")
        if body.get("first_referral"):
            first = load_sent(sent_dir, body["first_referral"])
            label = f" ({first['reference']})" if first else ""
            out.append(f"{INDENT}first referral: {body['first_referral']}{label}")
    else:
        out.append(f"{head}{who} receives a {kind} from {names(origin)}")

    key = verified["origin_key_id"]
    if origin == names.broker:
        out.append(f"{INDENT}✓ signed by the broker: valid (broker key {key} in the registry)")
    elif kind == "referral":
        out.append(f"{INDENT}✓ {names(origin)}'s own signature: valid on the exact bytes "
                   f"received (key {key})")
    else:
        out.append(f"{INDENT}✓ {names(origin)}'s signature: valid (key {key})")
    if att:
        if kind == "referral":
            out.append(f"{INDENT}✓ the broker's attestation: valid; routed here: "
                       f"{routed_words(att['items'])}; audit entry #{att['audit_seq']}")
            total = len(body["items"])
            mine = {i["index"] for i in att["items"]}
            for n, item in enumerate(body["items"]):
                if n not in mine:
                    continue
                h, c = item["hosting"], item["classification"]
                out.append(f"{INDENT}  [{n}] {item['url']}  hosted in "
                           f"{COUNTRIES.get(h['country'], h['country'])} ({h['ip']}); "
                           f"{c['legal_status']} {c['category'].upper()}, {c['victim_age_group']}")
            if len(mine) < total:
                others = ", ".join(str(n) for n in range(total) if n not in mine)
                out.append(f"{INDENT}  (not for this hotline: item(s) {others}, routed elsewhere)")
            for d in att.get("duplicates", []):
                out.append(f"{INDENT}  item {d['index']} is already open here "
                           f"(first referral {d['first_referral']})")
            for k in att.get("known_hashes", []):
                out.append(f"{INDENT}  item {k['item']}: hash already seen in referral "
                           f"{k['first_referral']}")
        else:
            out.append(f"{INDENT}✓ the broker's attestation: valid; audit entry #{att['audit_seq']}")
    return out


def run_inbox(args):
    names = Names(args.registry)
    me = None
    with open(args.config, "rb") as f:
        me = tomllib.load(f)["participant"]
    specs = [parse_spec(s) for s in args.expect]
    pending = list(specs)
    forbid = set(args.forbid)
    deadline = time.monotonic() + args.timeout
    polls = 0
    while True:
        polls += 1
        with open(args.stderr_log, "a") as errlog:
            proc = subprocess.run(
                [args.bin, "inbox", "--json", "--config", args.config],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog,
                env={**os.environ, "NO_COLOR": "1"}, check=False)
        if proc.returncode != 0:
            raise Failed(f"`referral-broker inbox` for {me} exited {proc.returncode} "
                         f"(see {args.stderr_log})")
        for raw in proc.stdout.decode("utf-8").splitlines():
            if not raw.strip():
                continue
            with open(args.keep, "a") as keep:
                keep.write(raw + "\n")
            event = json.loads(raw)
            kind = event["event"]
            if kind == "receipt_sent":
                print(f"{INDENT}→ sends a signed receipt back: {event['outcome']}")
                continue
            if kind == "refused":
                raise Failed(f"{me} refused a message: {event['problem']} {event.get('detail')}")
            if kind == "duplicate":
                print(f"{INDENT}(a second copy of {event['id']} was dropped: already handed over)")
                continue
            if kind != "message":
                raise Failed(f"unexpected inbox event: {raw}")
            if event["id"] in forbid or (event["envelope"]["kind"] != "checkpoint"
                                         and event["envelope"]["body"].get("referral") in forbid):
                raise Failed(f"{me} received {event['id']}, which must not have reached it")
            for line in tell(me, event, names, args.sent):
                print(line)
            hit = next((s for s in pending if matches(s, event)), None)
            if hit is not None:
                pending.remove(hit)
            elif event["envelope"]["kind"] != "checkpoint":
                raise Failed(f"{me} received a message the demo did not expect: "
                             f"{event['envelope']['kind']} {event['id']}")
        if not pending:
            if not specs:
                print(f"   ▸ {names(me)}'s inbox: nothing new (as expected)")
            return
        if time.monotonic() > deadline:
            raise Failed(f"after {args.timeout} s {me} still waits for: "
                         + ", ".join(":".join(s) for s in pending))
        time.sleep(0.3)


# --- a referral whose bytes change after signing -----------------------------------------------

def cmd_tampered(args):
    import nacl.signing  # noqa: PLC0415 (only this subcommand needs them)
    import pika  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    path = lambda p: os.path.join(base, p)  # noqa: E731
    me, b = cfg["participant"], cfg["broker"]
    with open(path(cfg["signing"]["key"])) as f:
        key = nacl.signing.SigningKey(base64.b64decode(f.read().strip(), validate=True))
    with open(args.body) as f:
        body = json.load(f)

    ms = time.time_ns() // 1_000_000  # a UUIDv7: 48-bit ms, version 7, variant 10, random
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((ms << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64)
             | (0b10 << 62) | (rand & (2**62 - 1)))
    envelope_id = str(uuid.UUID(int=value))
    now = datetime.datetime.now(datetime.timezone.utc)
    envelope = {"kind": "referral", "v": 1, "id": envelope_id, "origin": me,
                "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "body": body}
    signed = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
    signature = key.sign(signed).signature
    # After signing, someone changes the URL on the way (same length, still valid JSON).
    url = body["items"][0]["url"]
    changed_url = url[:-5] + ("9" if url[-5] != "9" else "8") + url[-4:]
    sent = signed.replace(url.encode(), changed_url.encode())
    assert sent != signed and len(sent) == len(signed)

    context = ssl.create_default_context(cafile=path(b["ca"]))
    context.load_cert_chain(path(b["certificate"]), path(b["key"]))
    params = pika.ConnectionParameters(
        host=b.get("host", "localhost"), port=int(b["port"]), virtual_host=b["vhost"],
        credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context, server_hostname=b.get("host", "localhost")))
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            content_type="application/json", type="referral", message_id=envelope_id,
            user_id=me, timestamp=int(time.time()), delivery_mode=2,
            headers={"x-sig": base64.b64encode(signature).decode("ascii"),
                     "x-key-id": hashlib.sha256(bytes(key.verify_key)).digest()[:8].hex()})
        channel.basic_publish("ingress", "ingress", sent, properties, mandatory=True)
    finally:
        connection.close()
    print(json.dumps({"id": envelope_id, "signed_url": url, "sent_url": changed_url}))


# --- the operators' status ---------------------------------------------------------------------

def cmd_status(args):
    with open(args.file) as f:
        s = json.load(f)
    problems = []
    if not s["readiness"]["ready"]:
        problems.append("the broker is not ready: " + "; ".join(s["readiness"]["reasons"]))
    quarantine = next((q["depth"] for q in s["queues"] if q["name"] == "quarantine"), None)
    if args.expect_quarantine is not None and quarantine != args.expect_quarantine:
        problems.append(f"quarantine holds {quarantine}, expected {args.expect_quarantine}")
    removed = {c["country"]: c for c in s["takedown"]["countries"]}
    for country in args.expect_removed:
        if removed.get(country, {}).get("removed", 0) < 1:
            problems.append(f"no removal counted for {country}")
    rejected = [r["code"] for r in s["recent_rejections"]]
    for code in args.expect_rejection:
        if code not in rejected:
            problems.append(f"no recent rejection {code} (have: {rejected})")
    if problems:
        raise Failed("; ".join(problems))
    print(f"{INDENT}✓ checked in the JSON: ready, quarantine holds {quarantine}, "
          + ", ".join(f"{c}: {removed[c]['removed']} removed (median {span(removed[c]['median_secs'])})"
                      for c in args.expect_removed)
          + f", recent rejections: {', '.join(sorted(set(rejected)))}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("referral", help="write a synthetic referral body")
    r.add_argument("--out", required=True)
    r.add_argument("--reference", required=True)
    r.add_argument("--report-at", required=True, help="public report received at (RFC 3339)")
    r.add_argument("--assessed-in", default="FR")
    r.add_argument("--urgent", action="store_true")
    r.add_argument("--item", nargs=3, action="append", required=True,
                   metavar=("URL", "COUNTRY", "IP"))

    i = sub.add_parser("inbox", help="read an inbox until the expected messages came")
    i.add_argument("--bin", required=True)
    i.add_argument("--config", required=True)
    i.add_argument("--registry", required=True)
    i.add_argument("--sent", required=True, help="directory of the referral bodies sent")
    i.add_argument("--keep", required=True, help="append every JSON line read to this file")
    i.add_argument("--stderr-log", required=True)
    i.add_argument("--expect", action="append", default=[])
    i.add_argument("--forbid", action="append", default=[])
    i.add_argument("--timeout", type=float, default=20)

    t = sub.add_parser("tampered", help="send a referral changed after signing")
    t.add_argument("--config", required=True)
    t.add_argument("--body", required=True)

    s = sub.add_parser("status", help="check the operators' status JSON")
    s.add_argument("--file", required=True)
    s.add_argument("--expect-quarantine", type=int)
    s.add_argument("--expect-removed", action="append", default=[])
    s.add_argument("--expect-rejection", action="append", default=[])

    args = p.parse_args()
    try:
        {"referral": cmd_referral, "inbox": run_inbox, "tampered": cmd_tampered,
         "status": cmd_status}[args.cmd](args)
    except Failed as e:
        print(f"demo: FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
