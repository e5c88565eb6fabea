//! A stand-in OIDC issuer, as a Kubernetes API server publishes one for its service-account
//! tokens: HTTPS with its own certificate, `/.well-known/openid-configuration` naming itself and
//! its `jwks_uri`, `/openid/v1/jwks` with the keys it signs with (changeable, to rotate), and a
//! count of key-set fetches. Signing keys of every algorithm the tests use, made in the test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

#[path = "../kubernetes/standin.rs"]
mod standin;

#[derive(Default)]
struct Published {
    /// Where this stand-in really is.
    own_url: String,
    /// The issuer its discovery document names (its own URL unless a test changes it).
    issuer: String,
    keys: Vec<Value>,
    jwks_fetches: u64,
}

/// A running issuer; serves until dropped.
pub struct Issuer {
    addr: SocketAddr,
    pub ca_pem: String,
    published: Arc<Mutex<Published>>,
    _runtime: tokio::runtime::Runtime,
}

impl Issuer {
    pub fn start() -> Issuer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let ca_pem = cert.cert.pem();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let published = Arc::new(Mutex::new(Published {
            own_url: format!("https://{addr}"),
            issuer: format!("https://{addr}"),
            ..Published::default()
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/openid/v1/jwks", get(jwks))
            .with_state(Arc::clone(&published));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (cert_pem, key_pem) = (ca_pem.clone().into_bytes(), cert.key_pair.serialize_pem().into_bytes());
        runtime.spawn(async move {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem).await.unwrap();
            axum_server::from_tcp_rustls(listener, tls).serve(app.into_make_service()).await.unwrap();
        });
        Issuer { addr, ca_pem, published, _runtime: runtime }
    }

    /// The issuer URL, as the tokens' `iss` and the discovery document name it.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/openid/v1/jwks", self.url())
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.published.lock().unwrap().keys = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// Makes the discovery document name another issuer (a misconfigured or spoofed one).
    pub fn claim_issuer(&self, issuer: &str) {
        self.published.lock().unwrap().issuer = issuer.to_owned();
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.published.lock().unwrap().jwks_fetches
    }

    /// A projected service-account token's claims as this issuer writes them.
    pub fn sa_claims(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url(),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": ["vault"],
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + 600,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": format!("uid-{name}")}},
        })
    }
}

async fn discovery(State(published): State<Arc<Mutex<Published>>>) -> Json<Value> {
    let published = published.lock().unwrap();
    let jwks_uri = format!("{}/openid/v1/jwks", published.own_url);
    Json(json!({
        "issuer": published.issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(published): State<Arc<Mutex<Published>>>) -> Json<Value> {
    let mut published = published.lock().unwrap();
    published.jwks_fetches += 1;
    Json(json!({ "keys": published.keys }))
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A private key with its public half as a JWK and as PEM.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
    pub public_pem: String,
}

impl SigningKey {
    /// One of two fixed RSA keys (0 or 1): generating RSA keys in a debug build is slow.
    pub fn rsa(which: usize, alg: Algorithm, kid: &str) -> SigningKey {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        use rsa::traits::PublicKeyParts;
        let pem = [standin::CLUSTER_KEY, standin::OTHER_CLUSTER_KEY][which];
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "kid": kid, "alg": format!("{alg:?}"),
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        let public_pem = public.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        SigningKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk,
            public_pem,
        }
    }

    pub fn p256(kid: &str) -> SigningKey {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "use": "sig", "kid": kid, "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let private_pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let encoding = EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
        SigningKey { alg: Algorithm::ES256, kid: kid.into(), encoding, jwk, public_pem }
    }

    pub fn ed25519(kid: &str) -> SigningKey {
        let seed: [u8; 32] = rand::random();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        // PKCS#8 v1 for Ed25519 is a fixed 16-byte prefix and the seed (RFC 8410).
        let mut der = hex_bytes("302e020100300506032b657004220420");
        der.extend_from_slice(&seed);
        let mut spki = hex_bytes("302a300506032b6570032100");
        spki.extend_from_slice(&public);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        let public_pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let jwk =
            json!({"kty": "OKP", "use": "sig", "kid": kid, "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public)});
        SigningKey { alg: Algorithm::EdDSA, kid: kid.into(), encoding: EncodingKey::from_ed_der(&der), jwk, public_pem }
    }

    /// A JWT of `claims` signed with this key, naming it by `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, Some(&self.kid))
    }

    pub fn sign_as(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}
