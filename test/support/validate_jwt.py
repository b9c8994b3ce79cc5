"""Validates JWT-SVIDs with PyJWT (Debian python3-jwt), as a relying party would: code Baton did not write.

stdin: {"jwks": <the JWK set of /v1/bundle.jwks>, "audience": "...", "issuer": "...", "tokens": ["..."]}
stdout: one JSON line per token, in order: {"ok": true, "header": {...}, "claims": {...}} or
{"ok": false, "error": "<exception class>: <message>"}.

The key is the JWKS entry with the token's kid and "use": "jwt-svid" (SPIFFE Trust Domain and Bundle
§4.2.2: only those keys validate JWT-SVIDs); only ES256 is accepted, and exp, iat, sub, aud and iss
are required, aud and iss checked.
"""

import json
import sys

import jwt


def validate(keys, token, audience, issuer):
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    matches = [k for k in keys.keys if k.key_id == kid and k.public_key_use == "jwt-svid"]
    if not matches:
        raise KeyError(f"no jwt-svid key with kid {kid!r} in the JWKS")
    claims = jwt.decode(
        token,
        matches[0].key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    return header, claims


def main():
    job = json.load(sys.stdin)
    keys = jwt.PyJWKSet.from_dict(job["jwks"])
    for token in job["tokens"]:
        try:
            header, claims = validate(keys, token, job["audience"], job["issuer"])
            print(json.dumps({"ok": True, "header": header, "claims": claims}))
        except Exception as e:  # every refusal is an answer, named by its class
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()
