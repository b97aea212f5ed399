#!/usr/bin/env python3
"""Checks every example under schemas/ with a second, independent validator (Python
`jsonschema` >= 4.18 with `referencing`, formats asserted; date-time needs
`rfc3339-validator`): valid/ must pass, invalid/ must fail. Covers the envelope, every
kind, and the broker's attestation (`attestation/1.schema.json`, the `x-attestation` header of
a forwarded message: not an envelope, a schema of its own). The Rust side of the same check
is `cargo test --test contract`. Usage: python3 schemas/tools/check_examples.py [-v]
(e.g. from a throwaway venv: python3 -m venv /tmp/v && /tmp/v/bin/pip install jsonschema
rfc3339-validator && /tmp/v/bin/python schemas/tools/check_examples.py)
"""
import glob
import json
import os
import sys

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ["referral", "receipt", "status", "retraction", "notice", "checkpoint"]
# Versioned documents with examples in <name>/1/{valid,invalid}/: every kind, then the
# attestation (self-contained: it refers to no other document).
VERSIONED = KINDS + ["attestation"]


def main() -> int:
    paths = [f"{ROOT}/envelope.schema.json"] + [f"{ROOT}/{k}/1.schema.json" for k in VERSIONED]
    schemas = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            schemas[p] = json.load(f)
        Draft202012Validator.check_schema(schemas[p])
    registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in schemas.values()]
    )
    checker = FormatChecker()
    for fmt in ("date-time", "ipv4", "ipv6"):
        if fmt not in checker.checkers:
            print(f"format {fmt} is not asserted here (missing optional package?)")
            return 2
    pairs = [(f"{ROOT}/{k}/1.schema.json", f"{ROOT}/{k}/1") for k in VERSIONED]
    pairs.append((f"{ROOT}/envelope.schema.json", f"{ROOT}/envelope"))
    wrong = 0
    checked = 0
    for schema_path, examples in pairs:
        validator = Draft202012Validator(schemas[schema_path], registry=registry, format_checker=checker)
        for verdict in ("valid", "invalid"):
            for path in sorted(glob.glob(f"{examples}/{verdict}/*.json")):
                with open(path, encoding="utf-8") as f:
                    errors = list(validator.iter_errors(json.load(f)))
                checked += 1
                if (not errors) != (verdict == "valid"):
                    wrong += 1
                    print("WRONG", os.path.relpath(path, ROOT), [e.message[:120] for e in errors][:3])
                elif "-v" in sys.argv and errors:
                    first = errors[0]
                    where = "/" + "/".join(map(str, first.absolute_path))
                    print(os.path.relpath(path, ROOT), "|", where, first.message[:100])
    print("examples checked:", checked)
    print("examples disagreeing with their folder:", wrong)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
