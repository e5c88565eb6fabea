"""Compatibility: the JWT auth method through the real hvac client (configure, roles, jwt_login)
with tokens signed here by the `cryptography` package, and External Secrets Operator's
kubernetesServiceAccountToken sequence (POST {role, jwt} to the mount's login, then
auth/token/lookup-self, whose type, ttl and expire_time ESO reads to decide on reuse)."""

import base64
import json
import time

import hvac
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hvac.exceptions import InvalidRequest

ISSUER = "https://oidc.cluster-a.example"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(key, claims, alg="RS256"):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


def sa_claims(namespace, name, **overrides):
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "aud": ["vault"],
        "iat": now,
        "exp": now + 600,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
    }
    claims.update(overrides)
    return claims


@pytest.fixture()
def jwt_mount(root, signing_key):
    root.sys.enable_auth_method("jwt", path="cluster-a")
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    root.sys.create_or_update_policy("prod-app", 'path "secret/data/app/*" { capabilities = ["read"] }')
    root.auth.jwt.configure(
        jwt_validation_pubkeys=[public_pem(signing_key)], bound_issuer=ISSUER, path="cluster-a"
    )
    root.auth.jwt.create_role(
        name="app",
        role_type="jwt",
        user_claim="sub",
        allowed_redirect_uris=None,
        bound_audiences=["vault"],
        bound_claims={"/kubernetes.io/namespace": ["prod"]},
        claim_mappings={"/kubernetes.io/serviceaccount/name": "service_account"},
        token_policies=["prod-app"],
        token_ttl="10m",
        path="cluster-a",
    )
    return root


def test_configure_and_roles_read_back(jwt_mount, signing_key):
    config = jwt_mount.auth.jwt.read_config(path="cluster-a")["data"]
    assert config["bound_issuer"] == ISSUER
    assert config["jwt_validation_pubkeys"] == [public_pem(signing_key)]
    role = jwt_mount.auth.jwt.read_role("app", path="cluster-a")["data"]
    assert role["role_type"] == "jwt" and role["user_claim"] == "sub"
    assert role["bound_claims"] == {"/kubernetes.io/namespace": ["prod"]}
    assert role["token_policies"] == ["prod-app"] and role["token_ttl"] == 600
    assert jwt_mount.auth.jwt.list_roles(path="cluster-a")["data"]["keys"] == ["app"]


def test_jwt_login_through_hvac(jwt_mount, server, signing_key):
    jwt_mount.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "pw"})
    app = hvac.Client(url=server)
    answer = app.auth.jwt.jwt_login(role="app", jwt=sign(signing_key, sa_claims("prod", "app")), path="cluster-a")
    auth = answer["auth"]
    assert auth["metadata"] == {"role": "app", "service_account": "app"}
    assert auth["policies"] == ["default", "prod-app"] and auth["lease_duration"] == 600
    assert app.token == auth["client_token"]
    assert app.secrets.kv.v2.read_secret_version(path="app/db")["data"]["data"] == {"password": "pw"}

    with pytest.raises(InvalidRequest, match="does not match any associated bound claim values"):
        app.auth.jwt.jwt_login(role="app", jwt=sign(signing_key, sa_claims("dev", "app")), path="cluster-a")
    with pytest.raises(InvalidRequest, match="token is expired"):
        stale = sa_claims("prod", "app", exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)
        app.auth.jwt.jwt_login(role="app", jwt=sign(signing_key, stale), path="cluster-a")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidRequest, match="failed to verify id token signature"):
        app.auth.jwt.jwt_login(role="app", jwt=sign(other, sa_claims("prod", "app")), path="cluster-a")


def test_external_secrets_operator_service_account_token_sequence(jwt_mount, server, signing_key):
    eso = hvac.Client(url=server)
    token = sign(signing_key, sa_claims("prod", "app"))
    answer = eso.adapter.post("/v1/auth/cluster-a/login", json={"role": "app", "jwt": token})
    eso.token = answer["auth"]["client_token"]
    me = eso.adapter.get("/v1/auth/token/lookup-self")["data"]
    assert me["type"] == "service"
    assert isinstance(me["ttl"], int) and 540 < me["ttl"] <= 600
    assert "expire_time" in me and me["expire_time"]
    assert me["path"] == "auth/cluster-a/login"
