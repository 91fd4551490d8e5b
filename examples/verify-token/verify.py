#!/usr/bin/env python3
"""Another service checking user-service's access tokens, holding no secret of ours.

It fetches the public keys from GET /.well-known/jwks.json (cached, and fetched again when
a token names a key it has not seen, as after a rotation), picks the one the token's `kid`
names, and accepts the token only if it is signed with the algorithm it was told to expect,
unexpired, from the expected issuer and, when one is given, for the expected audience.

    pip install "PyJWT[crypto]==2.10.1"
    python3 verify.py --base-url http://localhost:8080 --algorithm EdDSA "$ACCESS_TOKEN"

Prints the claims as JSON and exits 0, or prints why the token is refused and exits 1.
"""

import argparse
import json
import sys

import jwt


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("token")
    args.add_argument("--base-url", default="http://localhost:8080")
    # Pin the one algorithm the issuer is configured with (JWT_ALGORITHM): never let the
    # token's header choose it.
    args.add_argument("--algorithm", choices=["RS256", "EdDSA"], required=True)
    args.add_argument("--issuer", default="user-service")
    args.add_argument("--audience", help="JWT_AUDIENCE, if the issuer sets one")
    options = args.parse_args()

    keys = jwt.PyJWKClient(f"{options.base_url}/.well-known/jwks.json", lifespan=300)
    try:
        key = keys.get_signing_key_from_jwt(options.token)
        claims = jwt.decode(
            options.token,
            key,
            algorithms=[options.algorithm],
            issuer=options.issuer,
            audience=options.audience,
            options={"require": ["exp", "iat", "iss", "sub"]},
        )
    except jwt.PyJWTError as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
