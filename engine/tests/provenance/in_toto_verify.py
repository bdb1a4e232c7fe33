"""Verifies a Plue provenance envelope with PyPI's in-toto and securesystemslib, as an
outsider would: `in_toto_verify.py ENVELOPE.json KEYS.json` (KEYS.json as
GET /api/provenance/keys serves it). Prints the statement's subject digests as JSON and
exits 0 when a signature verifies with one of the keys and the statement keeps in-toto v1's
rules the library does not check (every resource descriptor — subject, resolved dependency,
byproduct — has a `uri`, a `digest` or a `content`); exits 1 with the reason otherwise.
"""

import base64
import json
import sys

from in_toto.models.metadata import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey


def main(envelope_path, keys_path):
    with open(envelope_path) as f:
        envelope = Envelope.from_dict(json.load(f))
    with open(keys_path) as f:
        listed = json.load(f)
    keys = [
        SSlibKey(k["keyid"], k["keytype"], k["scheme"], {"public": k["public"]})
        for k in listed
    ]
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"unexpected payload type {envelope.payload_type}", file=sys.stderr)
        return 1
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    statement = json.loads(envelope.payload)
    if statement["_type"] != "https://in-toto.io/Statement/v1":
        print(f"not an in-toto v1 statement: {statement['_type']}", file=sys.stderr)
        return 1
    if statement["predicateType"] != "https://slsa.dev/provenance/v1":
        print(f"not SLSA provenance v1: {statement['predicateType']}", file=sys.stderr)
        return 1
    predicate = statement["predicate"]
    described = (
        [("subject", d) for d in statement["subject"]]
        + [
            ("resolvedDependencies", d)
            for d in predicate["buildDefinition"].get("resolvedDependencies", [])
        ]
        + [("byproducts", d) for d in predicate["runDetails"].get("byproducts", [])]
    )
    for place, descriptor in described:
        if not any(descriptor.get(field) for field in ("uri", "digest", "content")):
            name = descriptor.get("name", "")
            print(
                f"refused: the {place} descriptor {name!r} has no uri, digest or content",
                file=sys.stderr,
            )
            return 1
    print(json.dumps([s["digest"] for s in statement["subject"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
