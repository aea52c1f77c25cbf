"""Authenticator.verify parses a token once and runs PyJWT's signature and claim checks on that
parse (cds_service.auth._JWS, _JWT). Over tokens good and bad in every way those checks look
at, each outcome is held equal to what `jwt.decode` (the call it replaced) decides for the same
token and key: the same claims, or the same exception type in the 401's reason."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service import auth
from cds_service.auth import Authenticator, KeySource, Unauthorized
from cds_service.trust import load_trust

ISS = "https://ehr.example"
AUD = "https://cds.example/cds-services/x"
LEEWAY = 30
REQUIRED = ["iss", "aud", "exp", "iat", "jti"]


class NoReplay:
    def first_use(self, *args) -> bool:
        return True


@pytest.fixture(scope="module")
def keys():
    return {
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "RS384": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "other-ES384": ec.generate_private_key(ec.SECP384R1()),
    }


@pytest.fixture(scope="module")
def verifier(keys, tmp_path_factory):
    jwks = []
    for kid in ("ES384", "ES256", "RS384"):
        public = keys[kid].public_key()
        jwk = json.loads(jwt.get_algorithm_by_name(kid).to_jwk(public))
        jwks.append(jwk | {"kid": kid, "alg": kid})
    path = tmp_path_factory.mktemp("trust") / "trust.json"
    path.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": jwks}}]}))
    trust = load_trust(path)
    return Authenticator(trust, KeySource(trust, 300, 30), NoReplay(), LEEWAY)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _cases(keys) -> list[tuple[str, str, str]]:
    """(name, token, kid of the configured key the token names)."""
    now = int(time.time())
    cases = []

    def add(name, claims, signer="ES384", alg="ES384", kid="ES384"):
        token = jwt.encode(claims, keys[signer], algorithm=alg, headers={"kid": kid, "typ": "JWT"})
        cases.append((name, token, kid))

    for alg in ("ES384", "ES256", "RS384"):
        add(f"good {alg}", _claims(), signer=alg, alg=alg, kid=alg)
    add("aud a list naming the endpoint", _claims(aud=["https://other", AUD]))
    add("aud a list without it", _claims(aud=["https://other"]))
    add("aud another endpoint", _claims(aud=AUD + "-other"))
    add("expired", _claims(iat=now - 400, exp=now - 100))
    add("expired within the leeway", _claims(iat=now - 310, exp=now - 10))
    add("expired exactly at the leeway", _claims(iat=now - 400, exp=now - LEEWAY))
    add("nbf in the future", _claims(nbf=now + 120))
    add("nbf within the leeway", _claims(nbf=now + 10))
    add("iat in the future", _claims(iat=now + 120, exp=now + 400))
    add("iat within the leeway", _claims(iat=now + 10))
    add("float times", _claims(iat=now + 0.5, exp=now + 300.25))
    add("extra claims", _claims(sub="someone", tenant="t", nonce=[1, 2]))
    add("signed by another key", _claims(), signer="other-ES384")
    add("ES256 header, key of the ES384 kid", _claims(), signer="ES256", alg="ES256")
    add("RS384 header, EC key", _claims(), signer="RS384", alg="RS384", kid="ES384")
    add("ES384 header, RSA key", _claims(), signer="ES384", alg="ES384", kid="RS384")
    add("ES384 header, P-256 key", _claims(), signer="ES384", alg="ES384", kid="ES256")
    good = jwt.encode(_claims(), keys["ES384"], algorithm="ES384", headers={"kid": "ES384"})
    head, payload, signature = good.split(".")
    foreign = cases[0][1].split(".")[2]  # the signature of the first case's token
    cases.append(("signature of another payload", f"{head}.{payload}.{foreign}", "ES384"))
    cases.append(("signature cut short", f"{head}.{payload}.{signature[:20]}", "ES384"))
    cases.append(("no signature", f"{head}.{payload}.", "ES384"))
    return cases


def _reference(token: str, key) -> str:
    """What the code before the single parse decided, for a token that reached jwt.decode."""
    alg = jwt.get_unverified_header(token)["alg"]
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=AUD,
            issuer=ISS,
            leeway=LEEWAY,
            options={"require": REQUIRED},
        )
    except (jwt.PyJWTError, TypeError, ValueError, OverflowError) as exc:
        return f"token rejected: {type(exc).__name__}"
    return f"accepted {sorted(claims.items())}"


@pytest.mark.parametrize("single_parse", [True, False], ids=["single-parse", "jwt.decode"])
def test_each_outcome_is_the_one_jwt_decode_gives(keys, verifier, monkeypatch, single_parse):
    # False: the fallback a PyJWT without the private methods gets.
    assert auth._SINGLE_PARSE, "this PyJWT lacks the methods the single parse calls"
    monkeypatch.setattr(auth, "_SINGLE_PARSE", single_parse)
    outcomes = set()
    for name, token, kid in _cases(keys):
        expected = _reference(token, keys[kid].public_key())
        try:
            verifier.verify(f"Bearer {token}", AUD)
            claims = jwt.decode(token, options={"verify_signature": False})
            got = f"accepted {sorted(claims.items())}"
        except Unauthorized as refusal:
            got = str(refusal)
            if not got.startswith("token rejected: "):  # refused after jwt.decode's checks
                assert expected.startswith("accepted"), (name, got, expected)
                continue
        assert got == expected, name
        outcomes.add(got.split(" [")[0])
    # The corpus reaches acceptance and each of the checks.
    for reason in (
        "accepted",
        "InvalidSignatureError",
        "ExpiredSignatureError",
        "ImmatureSignatureError",
        "InvalidAudienceError",
    ):
        assert any(outcome.endswith(reason) for outcome in outcomes), reason


def test_a_token_signed_by_a_key_not_configured_for_its_kid_is_refused(keys, verifier):
    token = jwt.encode(
        _claims(), keys["other-ES384"], algorithm="ES384", headers={"kid": "ES384", "typ": "JWT"}
    )
    with pytest.raises(Unauthorized, match="token rejected: InvalidSignatureError"):
        verifier.verify(f"Bearer {token}", AUD)
