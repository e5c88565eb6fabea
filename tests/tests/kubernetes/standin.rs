//! The stand-in Kubernetes API server shared by the Kubernetes end-to-end tests and the
//! `k8s_standin` example (the hvac login test and the login benchmark): real HTTPS with its own
//! certificate, TokenReview answered the way Kubernetes does, RS256 service-account tokens.

// Each user of this file (the test binary, the example) uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

/// The "cluster's" service-account signing key (a test-only 2048-bit RSA key from
/// `openssl genrsa 2048`): the stand-in verifies RS256 service-account tokens with its public half.
pub(crate) const CLUSTER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQCZvvB+YcuziliB
elbDN7lRVBB+P2TN4uxMnTT+2rRM6Hq+w9PFKAvffGgOb2J9+ZaQM5gmpbUdjFxI
YaR+sf/1qwfHx8N4c0kfjnKRC1pRZGxF8jHi/upce7keVYpZQuCEuaiZYt2Jjw8f
b1mMQPY9xBrs8GP+6oLJVenREW61vtGFAXFOel92C7uyd188qKsQz+DGDEmtPAVl
JPmXhP3FYuW9UKuQ1QuMyxXp718BdyPwCtoWotPd6lfAxC+ZarkyntqUEnWfLx79
/Axn9AkB0jJC8xkAGdYZ3KNU4y99MKMAU1H9LWb9wd4+fM1sTX205c8PotQq9HGH
/mohfDnDAgMBAAECggEAD1AoxPW5o8LKSO8l+CCzOQn98I0g3a7V6VWZIy8mWSio
nRqFG7R+5j4OYS2v6iszV16EL4k+rlg+EsmC6EmTXGUyC7B2ZCdbZ6S4/YBbeRLf
A+J5HIpWTmrWR9KuSnCySxXw2IIz3ZEdqPxet2z6+bDwG5xf4VJ7P1FqzfOGCtz0
fGPv7EnalRuzvn8BukgnEMOHmPOkHKjGM48fJtEd8nDxpd78Ilq3LM86le/MQrOr
sGl3qAfLz7mzsXn4It1hqpylJiC/Bm/EjeLTbHAOD4mwYSjYtJN0RSYjNU3Sn1lz
w7bGF5mvxepLCEqcd+B41IMrAHHqLZqPro/O7246TQKBgQDXB/s3IzcexGrIpFH1
aABIHENmDkkzgPl21gA8Hdoddp/jgtIHZNym1JzCd9tVyczp+/zfSEP+Ky4+yT37
hNX2xjT6ppySq3QjrWQBBPo7CD4WP1TUoP0gh4nzc3fl8KxAerJPCfwNyltvfvGv
nXObOzHgNMYVFfyIop/aHsjB7QKBgQC3Cc2GOYwMM32AZEKzc9Td1KkEMx12raWb
8HO345YtkPKT1culoRBGxmbJDlSA+MLIFCEdoeX4DYuMSE7wnHQb0p/3d7rnydVW
RstAf30W1vBL0+FWGfadRYRN5Rq8KKTQcgmnk0rJZsYl22IQW0GhLUkKvChG2zWg
9s1vE7w0bwKBgQCxjuGdsfJ98WrLqwQSRIKXCN+OkhVX9hQIUMV43p2Q3rdAQnHz
sRGSoNWgrx/qQux1+aHhLecXJcjWB46q9hFH6Hsuzg1T/0ezfiWpwdZukGvUKw99
VEIwbjs3UA2dTZKu26IJKhF7wbCm7Ifdn4IqmEKjBHDcUH9qw/6DOhBEMQKBgQCI
x4yMN0jOfVPVtBacH3z84EQFXWUxIIZXR5JR4oKBPoXnr6Zk+T0+hlic+lZvonV8
Kn6stCUz/ns/s3E6INArUnQz64cCWzNPK8wLQLnrbWdYYtdLDk/aKu65fvFBlmXD
VtScI1eJtYFxHMXlTyx2E2831G+Ms5cZ2BSgYvELhQKBgQDAqpC99NIkUot1c+tY
y5srNCa0mrL2fhJywCkJdMJjCNG5vosGIsCNcGvn3V/bnuMRC7XmjQmRmQHvd7ik
J05MaLvuxW/JyMPHQXxFFCw4Id88AfjeHzFhPJVgJnIf1m4FUgzYiDTllUVsvQ8P
4nBA9Hqvy8cM0B8bWvsXzOjtvw==
-----END PRIVATE KEY-----
";
pub(crate) const CLUSTER_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmb7wfmHLs4pYgXpWwze5
UVQQfj9kzeLsTJ00/tq0TOh6vsPTxSgL33xoDm9iffmWkDOYJqW1HYxcSGGkfrH/
9asHx8fDeHNJH45ykQtaUWRsRfIx4v7qXHu5HlWKWULghLmomWLdiY8PH29ZjED2
PcQa7PBj/uqCyVXp0RFutb7RhQFxTnpfdgu7sndfPKirEM/gxgxJrTwFZST5l4T9
xWLlvVCrkNULjMsV6e9fAXcj8AraFqLT3epXwMQvmWq5Mp7alBJ1ny8e/fwMZ/QJ
AdIyQvMZABnWGdyjVOMvfTCjAFNR/S1m/cHePnzNbE19tOXPD6LUKvRxh/5qIXw5
wwIDAQAB
-----END PUBLIC KEY-----
";
/// Another cluster's RSA key: tokens it signs must not authenticate.
pub(crate) const OTHER_CLUSTER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDRGvxt7MDBv0zj
qZmZ1SPQUOvL48AGGrk71lZD2IH84z9zuXvFyKuz91NA0/agm4+aL2+0Ws3GBx/z
H+LTvWbY/kvvPlnkn2XSyxp2ZgKHP0DzJk54TvUwd/v9rzGWKHSy5WUPKUFBCnSS
pMW+oUg6uQIPsLwqp3mNfJJyJ95e4VqxK/ZbVtm/bumuHeEJ7TUk9i6hBbhH/t3X
1bwFSUR+yDs0NZl0BJAz/DBozUlvpbdiXjqFfyRZHFoOf6hcrExrod3LueVTTjUQ
UEuNwAvYuWvMjwDxCnkjXWfkXS10xzk7rXLuDgQ9+OVyhRNSoXmKV+q9UoWQ+bNY
Tj0/lrp7AgMBAAECggEAIlYNlFlXj5kDnbCoTcffgSIAjjLgQcBaoVZBRRPEyIti
THTtO52HgF5A9/i2W0ogCv/2FkYA2x8pYmlefElyHXiobGkvJqj79eCvADkg+idr
WWH1abEBdwuEv/PoLxGGlCex8ArksbLvUHMpG3PtYeMmUQBC7bghcBfADmm4jJil
a6QbGSqGwphnxrdA3z1CtImCqvXdJcckmv/79y8wadqceNp34+WVBxOhPeZbcpME
QJw9AaEZ5Ttg5sAtutKPAbeuOYRdxwvE+xcBwEVcS+CZl5WXcraGX+Vf5xecy45x
X/Ak7vFfZMndb3JA3EnpGRa6G4fCjvfZgCjr9atqtQKBgQD6hs7+LPZjUKMlrO1k
30kXVKIHvCZrt7/lPB7fD2NySs4MeSqORG+fYAX1iHuEt8IXcuMKqygTuKMwXeuy
2qCxU0lqpaPUJS0peLJ6n+6iW0xVDEBoimFDHQSOtTxZvR8PJLJTun3sZzRYia9o
MYZJzayIHh6jIW1P7uXcOAlIBQKBgQDVrIJrNDnO3RltIErLA4SJ3bFWqXvG/NVm
iBMjujJh0C8UloFivh+IzAxkrxAdpDFw6hrvlFoMwNfKVJkJz7tS3dtlHulrxNcM
7YFSP6LMAR8rm/1PKS4jnUd5xOmFfCHkTxwGQdEZXpUEAtrSwo1l1QJgCOLh7kWe
RrPAA8wAfwKBgE+8tocp0mX71WF5b7mKY94cHtItbWEdg+M3RnAimrlW28wWiJft
akWkr2DdxsqQHiOOenr7zO6x9qa/TfSIJ1spMhXSkJlGF+C6PLxQyQg93Ma49osP
eDN/OeMeBg5d5lPQjz2c/tVOZ9fCQuT71k0JPF+6jm/HhN5LIDf+Ud3tAoGBAKs6
MNED6wdQut1uMUF6si1g0InoC16sob4mcWACB/nGQNQ4v7qHLPIMwim0+C8oss4P
bEJtGbR6nPJw1Kq+IxkG3JeuK9PGy6Z6dVWZ1TWx+G6T9GwJTgYQNYTpPVFQ5j/0
/TouaAfyeWvbdcvLSFBAYEThGh9/N57cfZLz9/i1AoGBAIcPJd8OEbVxLGvecoiJ
Xe2f3gSyvHPcJSe44o8uUYyCstGe17T/T7ckEmooc4oelHhU00cuEVf3uwopXW/l
bBeYZaPbUsxxvR1cpMFiohHqSs/9WBzbvTrWeIju/jBcBqiiIujuYKIXbkkgAaOW
BBWXRhxgGGXajTBqGYJz3Kx7
-----END PRIVATE KEY-----
";
/// The issuers this "cluster" signs with: projected tokens, and legacy secret-based tokens.
pub(crate) const ISSUERS: [&str; 2] = ["https://kubernetes.default.svc.cluster.local", "kubernetes/serviceaccount"];
pub(crate) const REVIEWER: &str = "reviewer-jwt-configured";

#[derive(Debug)]
pub(crate) struct ApiState {
    /// (bearer, request body) of every TokenReview received.
    pub(crate) requests: Vec<(String, Value)>,
    /// (HTTP status, body) of every answer, in order.
    pub(crate) answers: Vec<(u16, Value)>,
    /// The static bearer tokens allowed to create TokenReviews; any other bearer must itself be a
    /// valid service-account token of this cluster, else 401 (as a real API server does).
    pub(crate) reviewers: Vec<String>,
    /// When set, every authenticated review answers with this username.
    pub(crate) username_override: Option<String>,
    /// EC public key (PEM) for ES256 tokens.
    pub(crate) ec_public_pem: Option<String>,
    /// Keep every request and answer (tests); the benchmark turns it off.
    pub(crate) record: bool,
    /// Reviews answered, and the time spent answering them (for the benchmark's share of time).
    pub(crate) reviews: u64,
    pub(crate) review_time: Duration,
    /// Pods by (namespace, name), each with its labels; a PATCH to a pod not here is a 404.
    pub(crate) pods: std::collections::BTreeMap<(String, String), serde_json::Map<String, Value>>,
    /// Pod PATCHes received, as (namespace, name, body).
    pub(crate) patches: Vec<(String, String, Value)>,
}

impl Default for ApiState {
    fn default() -> ApiState {
        ApiState {
            requests: Vec::new(),
            answers: Vec::new(),
            reviewers: vec![REVIEWER.to_owned()],
            username_override: None,
            ec_public_pem: None,
            record: true,
            reviews: 0,
            review_time: Duration::ZERO,
            pods: std::collections::BTreeMap::new(),
            patches: Vec::new(),
        }
    }
}

/// The stand-in API server; runs on its own tokio runtime until dropped.
pub(crate) struct FakeApi {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    pub(crate) state: Arc<Mutex<ApiState>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApi {
    pub(crate) fn start() -> FakeApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let ca_pem = cert.cert.pem();
        let state = Arc::new(Mutex::new(ApiState::default()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let app = Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
            .route("/api/v1/namespaces/{namespace}/pods/{name}", axum::routing::patch(patch_pod))
            .with_state(Arc::clone(&state));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (cert_pem, key_pem) = (ca_pem.clone().into_bytes(), cert.key_pair.serialize_pem().into_bytes());
        runtime.spawn(async move {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem).await.unwrap();
            axum_server::from_tcp_rustls(listener, tls).serve(app.into_make_service()).await.unwrap();
        });
        FakeApi { addr, ca_pem, state, _runtime: runtime }
    }

    pub(crate) fn host(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub(crate) fn answers(&self) -> Vec<(u16, Value)> {
        self.state.lock().unwrap().answers.clone()
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap()
    }
}

/// A JSON Patch of a pod's labels, as the API server takes it: the caller must present a valid
/// service-account token, the body must be `application/json-patch+json`, the pod must exist;
/// `add`/`replace`/`remove` on `/metadata/labels/<key>` (`~1` is `/`).
pub(crate) async fn patch_pod(
    State(state): State<Arc<Mutex<ApiState>>>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let status = |code: StatusCode, message: &str| {
        (code, Json(json!({"kind": "Status", "status": "Failure", "message": message, "code": code.as_u16()})))
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let mut state = state.lock().unwrap();
    if bearer.is_empty() || verify_sa_token(&state, &bearer).is_err() {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json-patch+json") {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be application/json-patch+json");
    }
    let Ok(Value::Array(ops)) = serde_json::from_str::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "the body is not a JSON Patch array");
    };
    state.patches.push((namespace.clone(), name.clone(), Value::Array(ops.clone())));
    let Some(labels) = state.pods.get_mut(&(namespace, name)) else {
        return status(StatusCode::NOT_FOUND, "pods not found");
    };
    let mut patched = labels.clone();
    for op in &ops {
        let path = op["path"].as_str().unwrap_or_default();
        let Some(key) = path.strip_prefix("/metadata/labels/") else {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "only labels may be patched here");
        };
        let key = key.replace("~1", "/").replace("~0", "~");
        match (op["op"].as_str(), &op["value"]) {
            (Some("add"), Value::String(value)) => {
                patched.insert(key, Value::String(value.clone()));
            }
            (Some("replace"), Value::String(value)) if patched.contains_key(&key) => {
                patched.insert(key, Value::String(value.clone()));
            }
            (Some("remove"), _) if patched.contains_key(&key) => {
                patched.remove(&key);
            }
            _ => return status(StatusCode::UNPROCESSABLE_ENTITY, "the patch does not apply"),
        }
    }
    *labels = patched.clone();
    (StatusCode::OK, Json(json!({"kind": "Pod", "metadata": {"labels": patched}})))
}

/// What Kubernetes does with a TokenReview: check the caller, verify the token's signature
/// and expiry, intersect audiences, and answer with the status shape.
pub(crate) async fn token_review(
    State(state): State<Arc<Mutex<ApiState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let mut state = state.lock().unwrap();
    if state.record {
        state.requests.push((bearer.clone(), body.clone()));
    }
    let (status, answer) = answer_review(&state, &bearer, &body);
    if state.record {
        state.answers.push((status.as_u16(), answer.clone()));
    }
    state.reviews += 1;
    state.review_time += started.elapsed();
    (status, Json(answer))
}

pub(crate) fn answer_review(state: &ApiState, bearer: &str, body: &Value) -> (StatusCode, Value) {
    // The caller must authenticate: a known reviewer token, or a valid service-account token.
    let caller_ok =
        !bearer.is_empty() && (state.reviewers.iter().any(|r| r == bearer) || verify_sa_token(state, bearer).is_ok());
    if !caller_ok {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
        return (StatusCode::UNAUTHORIZED, status);
    }
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let review = |status: Value| {
        let answer = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                            "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status});
        (StatusCode::CREATED, answer)
    };
    let unauthenticated = |error: String| review(json!({"authenticated": false, "user": {}, "error": error}));
    let claims = match verify_sa_token(state, token) {
        Ok(claims) => claims,
        Err(error) => return unauthenticated(format!("[invalid bearer token, {error}]")),
    };
    let token_aud: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let audiences: Vec<String> = if wanted.is_empty() {
        token_aud
    } else {
        let both: Vec<String> = wanted.iter().filter(|a| token_aud.contains(a)).cloned().collect();
        if both.is_empty() {
            return unauthenticated(format!(
                "[invalid bearer token, token audiences {token_aud:?} is invalid for the target audiences {wanted:?}]"
            ));
        }
        both
    };
    let sa = &claims["kubernetes.io"];
    let mut extra = json!({});
    let (ns, name, uid) = if sa.is_object() {
        extra = json!({
            "authentication.kubernetes.io/pod-name": [sa["pod"]["name"]],
            "authentication.kubernetes.io/pod-uid": [sa["pod"]["uid"]],
        });
        (sa["namespace"].clone(), sa["serviceaccount"]["name"].clone(), sa["serviceaccount"]["uid"].clone())
    } else {
        (
            claims["kubernetes.io/serviceaccount/namespace"].clone(),
            claims["kubernetes.io/serviceaccount/service-account.name"].clone(),
            claims["kubernetes.io/serviceaccount/service-account.uid"].clone(),
        )
    };
    let ns = ns.as_str().unwrap_or_default();
    let username = state
        .username_override
        .clone()
        .unwrap_or_else(|| format!("system:serviceaccount:{ns}:{}", name.as_str().unwrap_or_default()));
    review(json!({
        "authenticated": true,
        "user": {
            "username": username,
            "uid": uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "extra": extra,
        },
        "audiences": audiences,
    }))
}

/// Verifies a service-account JWT the way the API server does: signature with the cluster's
/// key (RS256, or ES256 when an EC key is configured), `exp`/`nbf` when present (legacy
/// tokens have none), and a known issuer. Audiences are the caller's business.
pub(crate) fn verify_sa_token(state: &ApiState, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token".to_owned())?;
    let key = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(CLUSTER_PUBLIC_KEY.as_bytes()).unwrap(),
        Algorithm::ES256 => match &state.ec_public_pem {
            Some(pem) => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            None => return Err("unknown signing key".into()),
        },
        other => return Err(format!("unexpected signing method {other:?}")),
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|err| err.to_string())?;
    if !ISSUERS.iter().any(|iss| data.claims["iss"] == *iss) {
        return Err("token issuer is not trusted".into());
    }
    Ok(data.claims)
}

pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A projected service-account token's claims.
pub(crate) fn projected(ns: &str, name: &str, aud: Value) -> Value {
    json!({
        "aud": aud,
        "exp": now() + 3600,
        "iat": now() - 10,
        "nbf": now() - 10,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": format!("{name}-pod"), "uid": "pod-uid-1"},
            "serviceaccount": {"name": name, "uid": format!("uid-{ns}-{name}")}
        }
    })
}

/// A legacy secret-based service-account token's claims: flat keys, no `exp`, no `aud`.
pub(crate) fn legacy(ns: &str, name: &str, secret: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": format!("uid-{ns}-{name}"),
    })
}

/// Signs `claims` RS256 with an RSA private key PEM, with a `kid` as Kubernetes sets one.
pub(crate) fn rs256_with(key_pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-cluster-key".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap()).unwrap()
}

/// Signs `claims` RS256 with the cluster's service-account key.
pub(crate) fn rs256(claims: &Value) -> String {
    rs256_with(CLUSTER_KEY, claims)
}

pub(crate) fn sa_jwt(ns: &str, name: &str) -> String {
    rs256(&projected(ns, name, json!(["https://kubernetes.default.svc"])))
}
