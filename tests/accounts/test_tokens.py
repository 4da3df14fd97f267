"""Access tokens: every refusal the contract names, over HTTP."""
from __future__ import annotations

import time

import jwt
import pytest

from auth import tokens
from tests.conftest import error_code
from tests.factories import create_user


def _claims(user, settings, **changes):
    now = int(time.time())
    claims = {
        "sub": str(user.id), "sid": str(user.session_id), "jti": "j1", "iat": now, "exp": now + 600,
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def _refusal(gql, token):
    err = await gql.error("{ me { id } }", token=token)
    assert error_code(err) == "UNAUTHENTICATED"
    return err["message"]


async def test_a_valid_hand_made_token_is_accepted(app, gql, settings):
    # guards the refusal tests below: only the one changed claim makes them fail
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings), settings.secret_key, algorithm="HS256")
    assert (await gql.ok("{ me { username } }", token=token))["me"]["username"] == "alice"


async def test_expired_token(app, gql, settings):
    alice = await create_user(app, "alice")
    token, _ = tokens.mint_access_token(
        settings.secret_key, user_id=alice.id, session_id=alice.session_id, ttl=settings.access_token_ttl_seconds,
        issuer=settings.jwt_issuer, audience=settings.jwt_audience, issued_at=int(time.time()) - 3600,
    )
    assert await _refusal(gql, token) == "expired token"


async def test_tampered_payload(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    header, _, signature = alice.token.split(".")
    _, bob_payload, _ = bob.token.split(".")
    assert await _refusal(gql, f"{header}.{bob_payload}.{signature}") == "invalid token"


async def test_alg_none(app, gql, settings):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings), key=None, algorithm="none")
    assert await _refusal(gql, token) == "invalid token"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_other_algorithm_with_the_same_secret(app, gql, settings):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings), settings.secret_key, algorithm="HS512")
    assert await _refusal(gql, token) == "invalid token"


async def test_other_secret(app, gql, settings):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings), "another-secret-" + "y" * 40, algorithm="HS256")
    assert await _refusal(gql, token) == "invalid token"


async def test_wrong_audience(app, gql, settings):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings, aud="someone-else"), settings.secret_key, algorithm="HS256")
    assert await _refusal(gql, token) == "invalid token"


async def test_wrong_issuer(app, gql, settings):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings, iss="evil"), settings.secret_key, algorithm="HS256")
    assert await _refusal(gql, token) == "invalid token"


@pytest.mark.parametrize("claim", ["sub", "sid", "jti", "iat", "exp", "iss", "aud"])
async def test_missing_claim(app, gql, settings, claim):
    alice = await create_user(app, "alice")
    token = jwt.encode(_claims(alice, settings, **{claim: None}), settings.secret_key, algorithm="HS256")
    assert await _refusal(gql, token) == "invalid token"


async def test_session_of_another_user(app, gql, settings):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    token = jwt.encode(_claims(alice, settings, sid=str(bob.session_id)), settings.secret_key, algorithm="HS256")
    assert await _refusal(gql, token) == "invalid token"


async def test_garbage_and_missing_tokens(app, gql):
    assert await _refusal(gql, "garbage") == "invalid token"
    err = await gql.error("{ me { id } }")
    assert error_code(err) == "UNAUTHENTICATED"


async def test_revoked_session_over_http(app, gql):
    alice = await create_user(app, "alice")
    assert await gql.ok("mutation { logout }", token=alice.token) == {"logout": True}
    assert await _refusal(gql, alice.token) == "session revoked"
