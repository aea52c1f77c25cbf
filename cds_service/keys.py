"""Key pairs and signed test tokens, for trying the service locally with authentication on.

`cds-service keygen` makes a key pair (EC P-384 for ES384, or RSA 3072 for RS384) and writes the
private key (PEM, mode 0600) and the public JWKS to trust; `cds-service sign-token` signs a
token the way an EHR or the public CDS Hooks sandbox does (ES384, kid, jku, 5-minute exp).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import ConfigurationError


def make_key_pair(directory: Path, alg: str = "ES384", kid: str | None = None) -> str:
    """Write `private-key.pem` and `jwks.json` into `directory`; return the kid."""
    if alg == "ES384":
        private_key = ec.generate_private_key(ec.SECP384R1())
        algorithm: jwt.algorithms.Algorithm = jwt.algorithms.ECAlgorithm(
            jwt.algorithms.ECAlgorithm.SHA384
        )
    elif alg == "RS384":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        algorithm = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA384)
    else:
        raise ConfigurationError(f"--alg must be ES384 or RS384, not {alg}")
    kid = kid or uuid.uuid4().hex[:16]
    directory.mkdir(parents=True, exist_ok=True)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = directory / "private-key.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    public = json.loads(algorithm.to_jwk(private_key.public_key()))
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    (directory / "jwks.json").write_text(json.dumps({"keys": [public]}, indent=2) + "\n")
    return kid


def sign_token(
    key_path: Path,
    *,
    kid: str,
    iss: str,
    aud: str,
    alg: str = "ES384",
    tenant: str | None = None,
    jku: str | None = None,
    ttl_s: int = 300,
) -> str:
    """A client JWT for one endpoint URL (`aud`), valid for `ttl_s` seconds."""
    try:
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{key_path}: not a readable private key ({exc})") from None
    now = int(time.time())
    claims: dict = {
        "iss": iss,
        "aud": aud,
        "exp": now + ttl_s,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    if tenant:
        claims["tenant"] = tenant
    headers = {"kid": kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, private_key, algorithm=alg, headers=headers)
