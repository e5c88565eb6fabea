//! End to end: the JWT auth method against stand-in OIDC issuers that publish discovery
//! documents and key sets as Kubernetes API servers do. Two "clusters" each get a mount
//! (`auth/cluster-a`, `auth/cluster-b`) and their service accounts log in through their own
//! mount only; config writes fetch and check the keys; rotation is picked up through the `kid`
//! while made-up `kid`s cannot make the server fetch again and again; every algorithm verifies;
//! and forged, tampered, expired or misaddressed tokens are refused naming the failed check.

#[path = "jwt/issuer.rs"]
mod issuer;

use arcanum_tests::TestServer;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use issuer::{now, Issuer, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn ready() -> (TestServer, String) {
    let server = TestServer::start();
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token;
    let policy = "path \"secret/*\" { capabilities = [\"read\"] }";
    assert_eq!(server.put("sys/policies/acl/prod-app", Some(&root), json!({ "policy": policy })).0, 204);
    (server, root)
}

/// Mounts `jwt` at `auth/<mount>` trusting `issuer` through discovery, with a role `app` for
/// `system:serviceaccount:prod:app`, audience `vault`.
fn mount_cluster(server: &TestServer, root: &str, mount: &str, issuer: &Issuer) {
    let r = Some(root);
    assert_eq!(server.put(&format!("sys/auth/{mount}"), r, json!({ "type": "jwt" })).0, 204);
    let config = json!({
        "oidc_discovery_url": issuer.url(),
        "oidc_discovery_ca_pem": issuer.ca_pem,
        "bound_issuer": issuer.url(),
    });
    let (status, body) = server.put(&format!("auth/{mount}/config"), r, config);
    assert_eq!(status, 204, "{body}");
    let role = json!({
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": ["vault"],
        "bound_subject": "system:serviceaccount:prod:app",
        "bound_claims": { "/kubernetes.io/namespace": "prod" },
        "claim_mappings": { "/kubernetes.io/namespace": "namespace", "/kubernetes.io/serviceaccount/name": "service_account" },
        "token_policies": ["prod-app"],
        "token_ttl": "15m",
    });
    let (status, body) = server.put(&format!("auth/{mount}/role/app"), r, role);
    assert_eq!(status, 204, "{body}");
}

fn login(server: &TestServer, mount: &str, role: &str, jwt: &str) -> (u16, Value) {
    server.put(&format!("auth/{mount}/login"), None, json!({ "role": role, "jwt": jwt }))
}

/// Asserts a 400 naming `reason`, and that no part of the token is echoed.
fn assert_refused(server: &TestServer, mount: &str, role: &str, jwt: &str, reason: &str) {
    let (status, body) = login(server, mount, role, jwt);
    assert_eq!(status, 400, "{body}");
    let text = body["errors"][0].as_str().unwrap_or_default();
    assert!(text.contains(reason), "expected {reason:?} in {text:?}");
    let signature = jwt.rsplit('.').next().unwrap_or_default();
    assert!(signature.len() < 8 || !body.to_string().contains(signature), "the token is echoed: {body}");
}

#[test]
fn each_clusters_service_accounts_log_in_through_their_own_mount_only() {
    let (server, root) = ready();
    let (a, b) = (Issuer::start(), Issuer::start());
    let (key_a, key_b) = (SigningKey::rsa(0, Algorithm::RS256, "cluster-a-1"), SigningKey::p256("cluster-b-1"));
    a.publish(&[&key_a]);
    b.publish(&[&key_b]);
    mount_cluster(&server, &root, "cluster-a", &a);
    mount_cluster(&server, &root, "cluster-b", &b);

    let token_a = key_a.sign(&a.sa_claims("prod", "app"));
    let (status, answer) = login(&server, "cluster-a", "app", &token_a);
    assert_eq!(status, 200, "{answer}");
    let auth = &answer["auth"];
    assert_eq!(auth["policies"], json!(["default", "prod-app"]));
    assert_eq!(
        auth["metadata"],
        json!({ "role": "app", "namespace": "prod", "service_account": "app" }),
        "claim mappings become metadata"
    );
    assert_eq!(auth["lease_duration"], 900);
    let token = auth["client_token"].as_str().unwrap();
    let (status, me) = server.get("auth/token/lookup-self", Some(token));
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["data"]["path"], "auth/cluster-a/login");

    let token_b = key_b.sign(&b.sa_claims("prod", "app"));
    assert_eq!(login(&server, "cluster-b", "app", &token_b).0, 200, "cluster B's token at cluster B");

    // Cluster A's token at cluster B: B's keys do not sign it (and its issuer is not B's).
    assert_refused(&server, "cluster-b", "app", &token_a, "failed to verify id token signature");
    assert_refused(&server, "cluster-a", "app", &token_b, "failed to verify id token signature");
    // Even signed by a key B trusts, A's issuer is refused at B.
    let mut claims = a.sa_claims("prod", "app");
    claims["iss"] = json!(a.url());
    assert_refused(&server, "cluster-b", "app", &key_b.sign(&claims), "bound_issuer");

    // Another service account of cluster A, or the same name in another namespace.
    assert_refused(&server, "cluster-a", "app", &key_a.sign(&a.sa_claims("prod", "other")), "bound_subject");
    let mut claims = a.sa_claims("dev", "app");
    claims["sub"] = json!("system:serviceaccount:prod:app");
    assert_refused(&server, "cluster-a", "app", &key_a.sign(&claims), "\"/kubernetes.io/namespace\" does not match");
}

#[test]
fn config_writes_fetch_and_check_the_keys() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let issuer = Issuer::start();
    let key = SigningKey::rsa(0, Algorithm::RS256, "k1");
    issuer.publish(&[&key]);
    assert_eq!(server.put("sys/auth/jwt", r, json!({ "type": "jwt" })).0, 204);
    let put = |body: Value| server.put("auth/jwt/config", r, body);

    let (status, body) = put(json!({}));
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0],
        "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs' or 'oidc_discovery_url' must be set"
    );
    let (status, body) = put(json!({ "jwks_url": issuer.jwks_url(), "oidc_discovery_url": issuer.url() }));
    assert_eq!(status, 400, "{body}");

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (status, body) = put(json!({ "oidc_discovery_url": format!("https://{closed}") }));
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().starts_with("error checking oidc discovery URL: "), "{body}");
    // Without the issuer's CA its certificate is not trusted.
    let (status, body) = put(json!({ "oidc_discovery_url": issuer.url() }));
    assert_eq!(status, 400, "{body}");
    let other_ca = Issuer::start().ca_pem;
    let (status, body) = put(json!({ "oidc_discovery_url": issuer.url(), "oidc_discovery_ca_pem": other_ca }));
    assert_eq!(status, 400, "{body}");
    // A discovery document naming another issuer is refused.
    issuer.claim_issuer("https://kubernetes.default.svc");
    let (status, body) = put(json!({ "oidc_discovery_url": issuer.url(), "oidc_discovery_ca_pem": issuer.ca_pem }));
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("names issuer \"https://kubernetes.default.svc\""), "{body}");
    issuer.claim_issuer(&issuer.url());
    // HMAC algorithms cannot be allowed, nor can a broken PEM key be configured.
    let (status, body) =
        put(json!({ "jwks_url": issuer.jwks_url(), "jwks_ca_pem": issuer.ca_pem, "jwt_supported_algs": ["HS256"] }));
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        put(json!({ "jwt_validation_pubkeys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"] }));
    assert_eq!(status, 400, "{body}");
    let (status, read) = server.get("auth/jwt/config", r);
    assert_eq!(status, 404, "refused writes stored nothing (Vault: 404 before a config exists): {read}");

    let (status, body) =
        put(json!({ "jwks_url": issuer.jwks_url(), "jwks_ca_pem": issuer.ca_pem, "default_role": "app" }));
    assert_eq!(status, 204, "{body}");
    let (_, read) = server.get("auth/jwt/config", r);
    assert_eq!(read["data"]["jwks_url"], issuer.jwks_url());
    assert_eq!(read["data"]["default_role"], "app");
    // Switching source replaces the old one rather than leaving two.
    let (status, body) = put(json!({ "jwt_validation_pubkeys": [key.public_pem] }));
    assert_eq!(status, 204, "{body}");
    let (_, read) = server.get("auth/jwt/config", r);
    assert_eq!((read["data"]["jwks_url"].clone(), read["data"]["jwks_ca_pem"].clone()), (json!(""), json!("")));
    assert_eq!(read["data"]["default_role"], "app", "fields not written are kept");
}

#[test]
fn rotated_keys_are_fetched_by_kid_at_a_bounded_rate() {
    let (server, root) = ready();
    let issuer = Issuer::start();
    let (old, new) =
        (SigningKey::rsa(0, Algorithm::RS256, "2026-old"), SigningKey::rsa(1, Algorithm::RS256, "2026-new"));
    issuer.publish(&[&old]);
    mount_cluster(&server, &root, "cluster-a", &issuer);
    assert_eq!(issuer.jwks_fetches(), 1, "the config write fetched the key set");
    assert_eq!(login(&server, "cluster-a", "app", &old.sign(&issuer.sa_claims("prod", "app"))).0, 200);
    assert_eq!(issuer.jwks_fetches(), 1, "a known kid is served from the cache");

    // The cluster rotates: the next token names a kid the cache does not hold.
    issuer.publish(&[&old, &new]);
    let (status, body) = login(&server, "cluster-a", "app", &new.sign(&issuer.sa_claims("prod", "app")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.jwks_fetches(), 2);

    // Made-up kids right after: refused from the cache, no fetch each time.
    for n in 0..5 {
        let forged = new.sign_as(&issuer.sa_claims("prod", "app"), Some(&format!("made-up-{n}")));
        assert_refused(&server, "cluster-a", "app", &forged, "no key with kid");
    }
    assert_eq!(issuer.jwks_fetches(), 2, "unknown kids do not make the server fetch again within the bound");
}

#[test]
fn every_supported_algorithm_verifies() {
    let (server, root) = ready();
    let r = Some(root.as_str());
    let issuer = Issuer::start();
    let keys = [
        SigningKey::rsa(0, Algorithm::RS256, "rs256"),
        SigningKey::rsa(0, Algorithm::RS384, "rs384"),
        SigningKey::rsa(0, Algorithm::RS512, "rs512"),
        SigningKey::rsa(1, Algorithm::PS256, "ps256"),
        SigningKey::rsa(1, Algorithm::PS512, "ps512"),
        SigningKey::p256("es256"),
        SigningKey::ed25519("eddsa"),
    ];
    issuer.publish(&keys.iter().collect::<Vec<_>>());
    mount_cluster(&server, &root, "cluster-a", &issuer);
    for key in &keys {
        let (status, body) = login(&server, "cluster-a", "app", &key.sign(&issuer.sa_claims("prod", "app")));
        assert_eq!(status, 200, "{:?}: {body}", key.alg);
    }

    // The same keys as PEM in jwt_validation_pubkeys (no kid to go by: any key may verify).
    assert_eq!(server.put("sys/auth/pem", r, json!({ "type": "jwt" })).0, 204);
    let pems: Vec<&str> = [&keys[0], &keys[5], &keys[6]].iter().map(|k| k.public_pem.as_str()).collect();
    let (status, body) =
        server.put("auth/pem/config", r, json!({ "jwt_validation_pubkeys": pems, "bound_issuer": issuer.url() }));
    assert_eq!(status, 204, "{body}");
    let role =
        json!({ "role_type": "jwt", "user_claim": "sub", "bound_audiences": "vault", "token_policies": "prod-app" });
    assert_eq!(server.put("auth/pem/role/app", r, role).0, 204);
    for key in [&keys[0], &keys[5], &keys[6]] {
        let (status, body) = login(&server, "pem", "app", &key.sign_as(&issuer.sa_claims("prod", "app"), None));
        assert_eq!(status, 200, "{:?}: {body}", key.alg);
    }
    let stranger = SigningKey::rsa(1, Algorithm::RS256, "x");
    assert_refused(
        &server,
        "pem",
        "app",
        &stranger.sign_as(&issuer.sa_claims("prod", "app"), None),
        "with any configured key",
    );

    // jwt_supported_algs narrows what is accepted.
    let (status, _) = server.put("auth/pem/config", r, json!({ "jwt_supported_algs": ["ES256"] }));
    assert_eq!(status, 204);
    assert_refused(&server, "pem", "app", &keys[0].sign(&issuer.sa_claims("prod", "app")), "\"RS256\" is not allowed");
    assert_eq!(login(&server, "pem", "app", &keys[5].sign(&issuer.sa_claims("prod", "app"))).0, 200);
}

#[test]
fn forged_tampered_and_stale_tokens_are_refused_by_name() {
    let (server, root) = ready();
    let issuer = Issuer::start();
    let key = SigningKey::rsa(0, Algorithm::RS256, "k1");
    issuer.publish(&[&key]);
    mount_cluster(&server, &root, "cluster-a", &issuer);
    let good = issuer.sa_claims("prod", "app");

    // alg none: a header and a payload with an empty signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    assert_refused(&server, "cluster-a", "app", &format!("{none_header}.{payload}."), "not a compact JWS");
    // HS256 keyed with the public key (the algorithm-confusion attack).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(key.public_pem.as_bytes())).unwrap();
    assert_refused(&server, "cluster-a", "app", &confused, "\"HS256\" is not allowed");
    // A payload changed after signing.
    let signed = key.sign(&good);
    let parts: Vec<&str> = signed.split('.').collect();
    let mut claims = good.clone();
    claims["sub"] = json!("system:serviceaccount:kube-system:admin");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    assert_refused(&server, "cluster-a", "app", &tampered, "failed to verify id token signature");
    assert_refused(&server, "cluster-a", "app", "not-a-jwt", "not a compact JWS");

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        key.sign(&claims)
    };
    assert_refused(&server, "cluster-a", "app", &with(&|c| c["exp"] = json!(now() - 120)), "token is expired (exp)");
    assert_refused(&server, "cluster-a", "app", &with(&|c| c["nbf"] = json!(now() + 600)), "not valid yet (nbf)");
    let timeless = with(&|c| {
        for name in ["exp", "nbf", "iat"] {
            c.as_object_mut().unwrap().remove(name);
        }
    });
    assert_refused(&server, "cluster-a", "app", &timeless, "no issue time, notbefore, or expiration time");
    assert_refused(&server, "cluster-a", "app", &with(&|c| c["aud"] = json!("api")), "invalid audience (aud) claim");

    // Setup refusals, in Vault's words.
    let (status, body) = server.put("auth/cluster-a/login", None, json!({ "jwt": signed }));
    assert_eq!((status, body["errors"][0].clone()), (400, json!("missing role")));
    let (status, body) = login(&server, "cluster-a", "nope", &signed);
    assert_eq!((status, body["errors"][0].clone()), (400, json!("role \"nope\" could not be found")));
    let (status, body) = server.put("auth/cluster-a/login", None, json!({ "role": "app" }));
    assert_eq!((status, body["errors"][0].clone()), (400, json!("missing token")));
    let r = Some(root.as_str());
    let oidc = json!({ "user_claim": "sub", "allowed_redirect_uris": "https://app/callback" });
    assert_eq!(server.put("auth/cluster-a/role/browser", r, oidc).0, 204);
    let (status, body) = login(&server, "cluster-a", "browser", &signed);
    assert_eq!((status, body["errors"][0].clone()), (400, json!("role with oidc role_type is not allowed")));
    let (status, body) = server.put("auth/cluster-a/role/bad", r, json!({ "user_claim": "sub" }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0], "'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.");

    // A role bound to other addresses: 403, before the token is even looked at.
    let far = json!({ "role_type": "jwt", "user_claim": "sub", "bound_audiences": "vault", "token_bound_cidrs": ["10.0.0.0/8"] });
    assert_eq!(server.put("auth/cluster-a/role/far", r, far).0, 204);
    let (status, body) = login(&server, "cluster-a", "far", &signed);
    assert_eq!((status, body["errors"][0].clone()), (403, json!("request originated from invalid CIDR")));

    // The default role serves a login that names none.
    assert_eq!(server.put("auth/cluster-a/config", r, json!({ "default_role": "app" })).0, 204);
    let (status, body) = server.put("auth/cluster-a/login", None, json!({ "jwt": signed }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auth"]["metadata"]["role"], "app");
}
