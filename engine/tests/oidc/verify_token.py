"""Verifies a Plue step's OpenID Connect token as a relying party does, from the issuer's
discovery document alone: PyJWT's PyJWKClient fetches the keys the document names, and
`jwt.decode` checks the signature, `iss`, `aud`, `exp`, `nbf` and `iat`.

Usage: verify_token.py ISSUER AUDIENCE < TOKEN. Prints the claims as JSON; exits non-zero
with the reason when the token does not verify.
"""

import json
import sys
import urllib.request

import jwt


def main() -> int:
    issuer, audience = sys.argv[1], sys.argv[2]
    token = sys.stdin.read().strip()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(issuer + "/.well-known/openid-configuration", timeout=10) as response:
        config = json.load(response)
    if config["issuer"] != issuer:
        print(f"the document names issuer {config['issuer']!r}, not {issuer!r}", file=sys.stderr)
        return 2
    keys = jwt.PyJWKClient(config["jwks_uri"], cache_keys=False)
    try:
        key = keys.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=config["id_token_signing_alg_values_supported"],
            audience=audience,
            issuer=issuer,
            options={"require": ["iss", "aud", "sub", "exp", "iat", "nbf"]},
        )
    except jwt.PyJWTError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
