#!/usr/bin/env python3
"""Writes the example envelopes under schemas/ (valid/ and invalid/ beside each schema).

The examples are committed; this is how they were made. Re-running it rewrites them all
from a fixed seed (same output as long as this script is unchanged). Synthetic data only:
hosts under .example/.test, IPs from the documentation ranges, random hashes and ids.
Usage: python3 schemas/tools/make_examples.py
"""
import base64, copy, hashlib, json, os, random

R = random.Random(20261125)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def hexrand(n): return "".join(R.choice("0123456789abcdef") for _ in range(n))
def b64rand(nbytes): return base64.b64encode(bytes(R.getrandbits(8) for _ in range(nbytes))).decode()

def uuid7(ms):
    r = R.getrandbits(74)
    h = f"{ms:012x}" + "7" + f"{(r >> 62) & 0xfff:03x}" + R.choice("89ab") + f"{(r >> 50) & 0xfff:03x}" + f"{r & ((1<<48)-1):012x}"
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

CROCK = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
def ulid(ms):
    n = (ms << 80) | R.getrandbits(80)
    return "".join(CROCK[(n >> (5 * i)) & 31] for i in reversed(range(26)))

T0 = 1795000000000  # 2026-11-18-ish, ms
def ms(k): return T0 + k * 60000

def env(kind, body, origin="fr.hotline-example", id=None, created="2026-11-25T10:00:00Z"):
    return {"kind": kind, "v": 1, "id": id or uuid7(ms(R.randrange(1, 9999))), "origin": origin, "created_at": created, "body": body}

def item(**over):
    it = {
        "url": "https://images.example/gallery/2026/11/a7f3c9.jpg",
        "site_type": "image_host",
        "third_party_hosted": False,
        "media_type": "image",
        "hashes": [{"algorithm": "sha256", "value": hexrand(64)}],
        "classification": {
            "legal_status": "baseline",
            "assessing_jurisdiction": "FR",
            "category": "csam",
            "victim_age_group": "prepubescent",
            "victim_gender": "female",
        },
        "hosting": {"ip": "192.0.2.10", "country": "NL"},
        "assessed_at": "2026-11-25T09:40:12Z",
    }
    it.update(over)
    return it

def referral_body(**over):
    b = {"reference": "FR-2026-004211", "public_report_received_at": "2026-11-25T08:12:03Z", "priority": "normal", "items": [item()]}
    b.update(over)
    return b

OUT = {}
def put(path, value):
    OUT[path] = value

REF1 = uuid7(ms(100))
REF2 = ulid(ms(200))

# ---------------- referral ----------------
put("referral/1/valid/minimal.json", env("referral", referral_body(), id=uuid7(ms(1))))
all_hashes = [
    {"algorithm": "sha256", "value": hexrand(64)},
    {"algorithm": "sha1", "value": hexrand(40)},
    {"algorithm": "md5", "value": hexrand(32)},
    {"algorithm": "pdq", "value": hexrand(64)},
    {"algorithm": "photodna", "value": b64rand(144)},
]
put("referral/1/valid/urgent-all-fields.json", env("referral", {
    "reference": "FR-2026-004212",
    "public_report_received_at": "2026-11-25T08:30:00.5Z",
    "priority": "urgent",
    "escalation_reason": "The series appears to be newly produced; the setting suggests the child is still with the abuser.",
    "to": "nl.hotline-example",
    "notes": "Two mirrors of the same gallery.\nThe second host puts it behind a CDN.",
    "items": [
        item(hashes=all_hashes, first_seen="2026-11-24T22:01:00Z",
             classification={"legal_status": "baseline", "assessing_jurisdiction": "FR", "category": "csam",
                             "victim_age_group": "infant_toddler", "victim_gender": "unknown",
                             "ai_generated": "unknown", "computer_generated": False, "self_generated": False, "live_streaming": False},
             hosting={"ip": "198.51.100.77", "country": "NL", "asn": 64500, "provider": "Example Hosting B.V."}),
        item(url="https://cdn.files.test:8443/v/9c2e/clip.mp4?token=abc%20def#t=10", site_type="file_host", third_party_hosted=True,
             media_type="video",
             hashes=[{"algorithm": "md5", "value": hexrand(32)}, {"algorithm": "tmk_pdqf", "value": b64rand(1024)}],
             hosting={"ip": "2001:db8:85a3::8a2e:370:7334", "country": "DE", "asn": 64501, "provider": "Example Cloud GmbH", "cdn": "Example CDN"}),
    ],
}, id=ulid(ms(2)), created="2026-11-25T10:00:00.123456789Z"))
put("referral/1/valid/grooming-no-hashes.json", env("referral", referral_body(
    reference="FR-2026-004300",
    items=[item(url="http://forum.example/t/123456?page=3", site_type="forum", media_type="text", hashes=[],
                classification={"legal_status": "national", "assessing_jurisdiction": "FR", "category": "grooming_solicitation",
                                 "victim_age_group": "pubescent", "victim_gender": "male", "self_generated": True},
                hosting={"ip": "203.0.113.5", "country": "US"})]), id=uuid7(ms(3))))
put("referral/1/valid/ai-generated-csem-many-items.json", env("referral", referral_body(
    reference="FR-2026-004301",
    items=[item(url=f"https://board.example/b/res/{1000+i}.html#p{i}", site_type="image_board",
                classification={"legal_status": "national", "assessing_jurisdiction": "FR", "category": "csem",
                                "victim_age_group": "pubescent", "victim_gender": "both", "ai_generated": "suspected",
                                "computer_generated": True},
                hashes=[{"algorithm": "pdq", "value": hexrand(64)}],
                hosting={"ip": f"203.0.113.{20+i}", "country": "CA"}) for i in range(5)]), id=uuid7(ms(4))))
put("referral/1/valid/url-at-4096-bytes.json", env("referral", referral_body(
    items=[item(url="https://long.example/" + "a" * (4096 - len("https://long.example/")))]), id=uuid7(ms(5))))

base = env("referral", referral_body(), id=uuid7(ms(6)))
def bad_ref(name, mutate):
    e = copy.deepcopy(base); e["id"] = uuid7(ms(R.randrange(10000, 20000))); mutate(e); put(f"referral/1/invalid/{name}.json", e)
it0 = lambda e: e["body"]["items"][0]
bad_ref("url-too-long", lambda e: it0(e).update(url="https://long.example/" + "a" * (4097 - len("https://long.example/"))))
bad_ref("url-not-http", lambda e: it0(e).update(url="ftp://files.example/a.jpg"))
bad_ref("url-with-space", lambda e: it0(e).update(url="https://images.example/a b.jpg"))
bad_ref("url-relative", lambda e: it0(e).update(url="/gallery/a.jpg"))
bad_ref("url-port-out-of-range", lambda e: it0(e).update(url="https://images.example:99999/a.jpg"))
bad_ref("md5-wrong-length", lambda e: it0(e).update(hashes=[{"algorithm": "md5", "value": hexrand(30)}]))
bad_ref("sha256-uppercase-hex", lambda e: it0(e).update(hashes=[{"algorithm": "sha256", "value": hexrand(64).upper()}]))
bad_ref("photodna-wrong-length", lambda e: it0(e).update(hashes=[{"algorithm": "photodna", "value": b64rand(140)}]))
bad_ref("tmk-pdqf-non-canonical-base64", lambda e: it0(e).update(hashes=[{"algorithm": "tmk_pdqf", "value": "AAAB"+"AB=="}]))
bad_ref("tmk-pdqf-too-long", lambda e: it0(e).update(hashes=[{"algorithm": "tmk_pdqf", "value": b64rand(1539)}]))
bad_ref("hash-unknown-algorithm", lambda e: it0(e).update(hashes=[{"algorithm": "sha512", "value": hexrand(128)}]))
bad_ref("hash-repeated", lambda e: it0(e).update(hashes=[it0(base)["hashes"][0], it0(base)["hashes"][0]]))
bad_ref("urgent-without-escalation-reason", lambda e: e["body"].update(priority="urgent"))
bad_ref("escalation-reason-with-normal-priority", lambda e: e["body"].update(escalation_reason="Because."))
bad_ref("no-items", lambda e: e["body"].update(items=[]))
bad_ref("unknown-field-in-item", lambda e: it0(e).update(screenshot="iVBORw0KGgo="))
bad_ref("unknown-field-in-body", lambda e: e["body"].update(urgent=True))
bad_ref("country-lowercase", lambda e: it0(e)["hosting"].update(country="nl"))
bad_ref("hosting-country-missing", lambda e: it0(e)["hosting"].pop("country"))
bad_ref("ip-octet-out-of-range", lambda e: it0(e)["hosting"].update(ip="192.0.2.256"))
bad_ref("ipv6-with-zone-id", lambda e: it0(e)["hosting"].update(ip="fe80::1%eth0"))
bad_ref("asn-negative", lambda e: it0(e)["hosting"].update(asn=-1))
bad_ref("report-time-with-offset", lambda e: e["body"].update(public_report_received_at="2026-11-25T10:12:03+02:00"))
bad_ref("assessed-at-february-30", lambda e: it0(e).update(assessed_at="2026-02-30T09:40:12Z"))
bad_ref("notes-too-long", lambda e: e["body"].update(notes="n" * 4097))
bad_ref("reference-with-newline", lambda e: e["body"].update(reference="FR-2026\n004211"))
bad_ref("to-not-a-participant-id", lambda e: e["body"].update(to="NL Hotline"))
bad_ref("category-unknown", lambda e: it0(e)["classification"].update(category="adult"))
bad_ref("ai-generated-boolean", lambda e: it0(e)["classification"].update(ai_generated=True))
bad_ref("classification-missing", lambda e: it0(e).pop("classification"))
bad_ref("version-2", lambda e: e.update(v=2))
bad_ref("receipt-body-under-referral-kind", lambda e: e.update(body={"referral": REF1, "outcome": "accepted"}))

# ---------------- receipt ----------------
put("receipt/1/valid/accepted.json", env("receipt", {"referral": REF1, "outcome": "accepted"}, origin="nl.hotline-example"))
put("receipt/1/valid/rejected-with-reason.json", env("receipt", {"referral": REF1, "outcome": "rejected",
    "reason": "Hosting is outside our country; we do not act on it.", "received_at": "2026-11-25T10:00:02.25Z"}, origin="nl.hotline-example"))
put("receipt/1/valid/accepted-ulid-referral.json", env("receipt", {"referral": REF2, "outcome": "accepted",
    "received_at": "2026-11-25T10:00:01Z", "reason": "Items 2 and 3 are already known to us; we act on the others."}, origin="de.hotline-example", id=ulid(ms(300))))
rbase = env("receipt", {"referral": REF1, "outcome": "accepted"}, origin="nl.hotline-example")
def bad_rc(name, mutate):
    e = copy.deepcopy(rbase); e["id"] = uuid7(ms(R.randrange(20000, 30000))); mutate(e); put(f"receipt/1/invalid/{name}.json", e)
bad_rc("rejected-without-reason", lambda e: e["body"].update(outcome="rejected"))
bad_rc("outcome-unknown", lambda e: e["body"].update(outcome="maybe"))
bad_rc("referral-uuid-v4", lambda e: e["body"].update(referral="f47ac10b-58cc-4372-a567-0e02b2c3d479"))
bad_rc("referral-missing", lambda e: e["body"].pop("referral"))
bad_rc("unknown-field", lambda e: e["body"].update(items=[0]))
bad_rc("received-at-without-z", lambda e: e["body"].update(received_at="2026-11-25T10:00:01"))
bad_rc("reason-too-long", lambda e: e["body"].update(outcome="rejected", reason="r" * 1025))
bad_rc("reason-with-nul", lambda e: e["body"].update(outcome="rejected", reason="bad\u0000reason"))
bad_rc("kind-status-for-receipt-body", lambda e: e.update(kind="status"))

# ---------------- status ----------------
put("status/1/valid/removed.json", env("status", {"referral": REF1, "item": 0, "state": "removed", "at": "2026-11-26T14:03:00Z"}, origin="nl.hotline-example"))
put("status/1/valid/disputed.json", env("status", {"referral": REF1, "item": 1, "state": "disputed", "at": "2026-11-25T11:00:00Z",
    "reason": "Assessed as adult under our national law (age indicators insufficient)."}, origin="nl.hotline-example"))
put("status/1/valid/forwarded-to-lea.json", env("status", {"referral": REF2, "item": 499, "state": "forwarded_to_lea", "at": "2026-11-25T10:30:00.000001Z",
    "lea_case_number": "NL-POL-2026/118842", "note": "Victim identification team informed."}, origin="de.hotline-example"))
put("status/1/valid/takedown-requested.json", env("status", {"referral": REF1, "item": 3, "state": "takedown_requested", "at": "2026-11-25T12:00:00Z"}, origin="nl.hotline-example"))
sbase = env("status", {"referral": REF1, "item": 0, "state": "removed", "at": "2026-11-26T14:03:00Z"}, origin="nl.hotline-example")
def bad_st(name, mutate):
    e = copy.deepcopy(sbase); e["id"] = uuid7(ms(R.randrange(30000, 40000))); mutate(e); put(f"status/1/invalid/{name}.json", e)
bad_st("disputed-without-reason", lambda e: e["body"].update(state="disputed"))
bad_st("forwarded-without-lea-case-number", lambda e: e["body"].update(state="forwarded_to_lea"))
bad_st("lea-case-number-with-removed", lambda e: e["body"].update(lea_case_number="NL-POL-2026/1"))
bad_st("item-index-500", lambda e: e["body"].update(item=500))
bad_st("item-index-negative", lambda e: e["body"].update(item=-1))
bad_st("item-index-fractional", lambda e: e["body"].update(item=1.5))
bad_st("state-unknown", lambda e: e["body"].update(state="deleted"))
bad_st("at-missing", lambda e: e["body"].pop("at"))
bad_st("at-leap-second", lambda e: e["body"].update(at="2026-12-31T23:59:60Z"))
bad_st("note-too-long", lambda e: e["body"].update(note="x" * 1025))

# ---------------- retraction ----------------
put("retraction/1/valid/sent-in-error.json", env("retraction", {"referral": REF1, "reason": "Sent in error: wrong case attached."}))
put("retraction/1/valid/ulid-referral.json", env("retraction", {"referral": REF2, "reason": "Duplicate of an earlier referral."}, id=ulid(ms(400))))
put("retraction/1/valid/multiline-reason.json", env("retraction", {"referral": REF1,
    "reason": "Re-assessment by a second analyst:\n\tthe persons depicted are adults.\r\nWithdrawn."}, origin="be.hotline-example"))
tbase = env("retraction", {"referral": REF1, "reason": "Sent in error."})
def bad_rt(name, mutate):
    e = copy.deepcopy(tbase); e["id"] = uuid7(ms(R.randrange(40000, 50000))); mutate(e); put(f"retraction/1/invalid/{name}.json", e)
bad_rt("reason-missing", lambda e: e["body"].pop("reason"))
bad_rt("reason-empty", lambda e: e["body"].update(reason=""))
bad_rt("reason-too-long", lambda e: e["body"].update(reason="é" * 1025))
bad_rt("referral-ulid-lowercase", lambda e: e["body"].update(referral=REF2.lower()))
bad_rt("unknown-field", lambda e: e["body"].update(items=[1, 2]))
bad_rt("referral-missing", lambda e: e["body"].pop("referral"))
bad_rt("body-is-array", lambda e: e.update(body=[REF1]))

# ---------------- notice ----------------
put("notice/1/valid/schema-violation.json", env("notice", {"code": "schema_violation", "message": "The message does not match the schema of its kind.",
    "about": REF1, "detail": "/body/items/0/url: \"ftp://files.example/a.jpg\" does not match the pattern"}, origin="broker.referral-example"))
put("notice/1/valid/duplicate.json", env("notice", {"code": "duplicate", "message": "The URL is already open at the destination; it was not forwarded again.",
    "about": REF2, "first_referral": REF1, "items": [0, 2], "detail": "destination nl.hotline-example"}, origin="broker.referral-example"))
put("notice/1/valid/bad-signature-unknown-envelope.json", env("notice", {"code": "bad_signature",
    "message": "The signature does not match the message body."}, origin="broker.referral-example", id=ulid(ms(500))))
put("notice/1/valid/unroutable.json", env("notice", {"code": "unroutable", "message": "No destination could be found for an item.",
    "about": REF1, "items": [4]}, origin="broker.referral-example"))
nbase = env("notice", {"code": "replayed", "message": "A message with this envelope id was already received.", "about": REF1}, origin="broker.referral-example")
def bad_nt(name, mutate):
    e = copy.deepcopy(nbase); e["id"] = uuid7(ms(R.randrange(50000, 60000))); mutate(e); put(f"notice/1/invalid/{name}.json", e)
bad_nt("code-unknown", lambda e: e["body"].update(code="out_of_coffee"))
bad_nt("code-uppercase", lambda e: e["body"].update(code="REPLAYED"))
bad_nt("first-referral-without-duplicate-code", lambda e: e["body"].update(first_referral=REF2))
bad_nt("message-missing", lambda e: e["body"].pop("message"))
bad_nt("message-too-long", lambda e: e["body"].update(message="m" * 513))
bad_nt("items-repeated", lambda e: e["body"].update(items=[1, 1]))
bad_nt("items-index-out-of-range", lambda e: e["body"].update(items=[500]))
bad_nt("items-empty", lambda e: e["body"].update(items=[]))
bad_nt("about-not-an-id", lambda e: e["body"].update(about="referral 42"))

# ---------------- checkpoint ----------------
def note(origin, size, root, sigs):
    text = f"{origin}\n{size}\n{root}\n"
    return text + "\n" + "".join(f"\u2014 {name} {b64rand(68)}\n" for name in sigs)
empty_root = base64.b64encode(hashlib.sha256(b"").digest()).decode()
r42 = b64rand(32)
r1 = b64rand(32)
put("checkpoint/1/valid/empty-tree.json", env("checkpoint", {"log": "broker.referral-example/audit", "size": 0, "root": empty_root,
    "time": "2026-11-25T00:00:00Z", "note": note("broker.referral-example/audit", 0, empty_root, ["broker.referral-example"])}, origin="broker.referral-example"))
put("checkpoint/1/valid/size-42.json", env("checkpoint", {"log": "broker.referral-example/audit", "size": 42, "root": r42,
    "time": "2026-11-25T10:05:00.5Z", "note": note("broker.referral-example/audit", 42, r42, ["broker.referral-example"])}, origin="broker.referral-example"))
put("checkpoint/1/valid/cosigned.json", env("checkpoint", {"log": "broker.referral-example/audit", "size": 9007199254740991, "root": r1,
    "time": "2026-11-25T10:10:00Z", "note": note("broker.referral-example/audit", 9007199254740991, r1, ["broker.referral-example", "witness.example"])}, origin="broker.referral-example", id=ulid(ms(600))))
cbase = env("checkpoint", {"log": "broker.referral-example/audit", "size": 42, "root": r42, "time": "2026-11-25T10:05:00Z",
    "note": note("broker.referral-example/audit", 42, r42, ["broker.referral-example"])}, origin="broker.referral-example")
def bad_cp(name, mutate):
    e = copy.deepcopy(cbase); e["id"] = uuid7(ms(R.randrange(60000, 70000))); mutate(e); put(f"checkpoint/1/invalid/{name}.json", e)
bad_cp("root-wrong-length", lambda e: e["body"].update(root=b64rand(31)))
bad_cp("root-hex-not-base64", lambda e: e["body"].update(root=hexrand(64)))
bad_cp("root-non-canonical-base64", lambda e: e["body"].update(root=r42[:42] + "B="))
bad_cp("size-negative", lambda e: e["body"].update(size=-1))
bad_cp("size-above-2-pow-53", lambda e: e["body"].update(size=9007199254740992))
bad_cp("note-without-signature-line", lambda e: e["body"].update(note="broker.referral-example/audit\n42\n" + r42 + "\n"))
bad_cp("note-too-long", lambda e: e["body"].update(note="x" * 4000 + "\n" + note("broker.referral-example/audit", 42, r42, ["broker.referral-example"])))
bad_cp("note-with-tab", lambda e: e["body"].update(note="broker.referral-example/audit\t\n42\n" + r42 + "\n\n\u2014 broker.referral-example " + b64rand(68) + "\n"))
bad_cp("time-missing", lambda e: e["body"].pop("time"))

# ---------------- envelope ----------------
put("envelope/valid/referral.json", env("referral", referral_body(reference="BE-77"), origin="be.hotline-example", id=uuid7(ms(700))))
put("envelope/valid/receipt-ulid-nanoseconds.json", env("receipt", {"referral": REF1, "outcome": "accepted"}, origin="nl.hotline-example",
    id=ulid(ms(701)), created="2026-11-25T10:00:00.000000001Z"))
put("envelope/valid/notice-from-broker.json", env("notice", {"code": "clock_skew", "message": "The message's created_at is too far from the broker's clock."},
    origin="broker.referral-example", created="2026-01-01T00:00:00.1Z"))
put("envelope/valid/long-origin.json", env("retraction", {"referral": REF1, "reason": "Sent in error."},
    origin="a" * 30 + "." + "b" * 33))
ebase = env("receipt", {"referral": REF1, "outcome": "accepted"}, origin="nl.hotline-example")
def bad_ev(name, mutate):
    e = copy.deepcopy(ebase); e["id"] = uuid7(ms(R.randrange(70000, 80000))); mutate(e); put(f"envelope/invalid/{name}.json", e)
bad_ev("kind-unknown", lambda e: e.update(kind="invoice"))
bad_ev("v-zero", lambda e: e.update(v=0))
bad_ev("v-string", lambda e: e.update(v="1"))
bad_ev("id-uuid-v4", lambda e: e.update(id="f47ac10b-58cc-4372-a567-0e02b2c3d479"))
bad_ev("id-uuid-v7-uppercase", lambda e: e.update(id=e["id"].upper()))
bad_ev("id-uuid-v7-wrong-variant", lambda e: e.update(id=e["id"][:19] + "c" + e["id"][20:]))
bad_ev("id-ulid-lowercase", lambda e: e.update(id=ulid(ms(9)).lower()))
bad_ev("id-ulid-overflow", lambda e: e.update(id="8" + ulid(ms(9))[1:]))
bad_ev("origin-single-label", lambda e: e.update(origin="nlhotline"))
bad_ev("origin-uppercase", lambda e: e.update(origin="NL.hotline-example"))
bad_ev("origin-label-ends-with-hyphen", lambda e: e.update(origin="nl.hotline-"))
bad_ev("origin-too-long", lambda e: e.update(origin="a" * 30 + "." + "b" * 34))
bad_ev("created-at-with-offset", lambda e: e.update(created_at="2026-11-25T11:00:00+01:00"))
bad_ev("created-at-lowercase-z", lambda e: e.update(created_at="2026-11-25T10:00:00z"))
bad_ev("created-at-ten-fraction-digits", lambda e: e.update(created_at="2026-11-25T10:00:00.0000000001Z"))
bad_ev("created-at-date-only", lambda e: e.update(created_at="2026-11-25"))
bad_ev("unknown-top-level-field", lambda e: e.update(signature="AAAA"))
bad_ev("body-missing", lambda e: e.pop("body"))
bad_ev("body-null", lambda e: e.update(body=None))
bad_ev("top-level-array", lambda e: None)

for path, value in sorted(OUT.items()):
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if path == "envelope/invalid/top-level-array.json":
        value = [ebase]
    with open(full, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")
print(len(OUT), "examples")
