//! End to end: the Kubernetes auth method against a stand-in API server (HTTPS with its own
//! self-signed certificate) that answers TokenReviews the way Kubernetes does and records
//! every request, so the tests can see the reviewer bearer and the audiences Arcanum sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arcanum_tests::TestServer;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

/// The "cluster's" service-account signing key (a test-only 2048-bit RSA key from
/// `openssl genrsa 2048`): the stand-in verifies RS256 service-account tokens with its public half.
const CLUSTER_KEY: &str = "-----BEGIN PRIVATE KEY-----
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
const CLUSTER_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
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
const OTHER_CLUSTER_KEY: &str = "-----BEGIN PRIVATE KEY-----
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
const ISSUERS: [&str; 2] = ["https://kubernetes.default.svc.cluster.local", "kubernetes/serviceaccount"];
const REVIEWER: &str = "reviewer-jwt-configured";

#[derive(Debug)]
struct ApiState {
    /// (bearer, request body) of every TokenReview received.
    requests: Vec<(String, Value)>,
    /// (HTTP status, body) of every answer, in order.
    answers: Vec<(u16, Value)>,
    /// The static bearer tokens allowed to create TokenReviews; any other bearer must itself be a
    /// valid service-account token of this cluster, else 401 (as a real API server does).
    reviewers: Vec<String>,
    /// When set, every authenticated review answers with this username.
    username_override: Option<String>,
    /// EC public key (PEM) for ES256 tokens.
    ec_public_pem: Option<String>,
}

impl Default for ApiState {
    fn default() -> ApiState {
        ApiState {
            requests: Vec::new(),
            answers: Vec::new(),
            reviewers: vec![REVIEWER.to_owned()],
            username_override: None,
            ec_public_pem: None,
        }
    }
}

/// The stand-in API server; runs on its own tokio runtime until dropped.
struct FakeApi {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<ApiState>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApi {
    fn start() -> FakeApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let ca_pem = cert.cert.pem();
        let state = Arc::new(Mutex::new(ApiState::default()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let app = Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
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

    fn host(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    fn answers(&self) -> Vec<(u16, Value)> {
        self.state.lock().unwrap().answers.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap()
    }
}

/// What Kubernetes does with a TokenReview: check the caller, verify the token's signature
/// and expiry, intersect audiences, and answer with the status shape.
async fn token_review(
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
    let mut state = state.lock().unwrap();
    state.requests.push((bearer.clone(), body.clone()));
    let (status, answer) = answer_review(&state, &bearer, &body);
    state.answers.push((status.as_u16(), answer.clone()));
    (status, Json(answer))
}

fn answer_review(state: &ApiState, bearer: &str, body: &Value) -> (StatusCode, Value) {
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
fn verify_sa_token(state: &ApiState, token: &str) -> Result<Value, String> {
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

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A projected service-account token's claims.
fn projected(ns: &str, name: &str, aud: Value) -> Value {
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
fn legacy(ns: &str, name: &str, secret: &str) -> Value {
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
fn rs256_with(key_pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-cluster-key".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap()).unwrap()
}

/// Signs `claims` RS256 with the cluster's service-account key.
fn rs256(claims: &Value) -> String {
    rs256_with(CLUSTER_KEY, claims)
}

fn sa_jwt(ns: &str, name: &str) -> String {
    rs256(&projected(ns, name, json!(["https://kubernetes.default.svc"])))
}

/// An unsealed server with kubernetes auth at `kubernetes/` pointed at `api`, kv v2 at
/// `secret/`, a policy `app-read` on `secret/data/app/*`, and role `app`.
fn setup(server: &TestServer, api: &FakeApi, config: Value) -> String {
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let root = init.root_token;
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/auth/kubernetes", r, json!({"type": "kubernetes"})).0, 204);
    let mut body = json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": api.ca_pem});
    for (k, v) in config.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = server.put("auth/kubernetes/config", r, body);
    assert_eq!(status, 204, "{answer}");
    assert_eq!(server.put("sys/mounts/secret", r, json!({"type": "kv", "options": {"version": "2"}})).0, 204);
    let policy = "path \"secret/data/app/*\" { capabilities = [\"read\"] }";
    assert_eq!(server.put("sys/policies/acl/app-read", r, json!({"policy": policy})).0, 204);
    let (status, answer) = server.put(
        "auth/kubernetes/role/app",
        r,
        json!({
            "bound_service_account_names": ["app-sa", "web-*"],
            "bound_service_account_namespaces": "prod,team-*",
            "token_policies": ["app-read"],
            "token_ttl": "1h",
            "token_max_ttl": "2h",
        }),
    );
    assert_eq!(status, 204, "{answer}");
    let (status, answer) =
        server.put("secret/data/app/config", r, json!({"data": {"username": "db-user", "password": "s3cret"}}));
    assert_eq!(status, 200, "{answer}");
    root
}

fn login(server: &TestServer, role: &str, jwt: &str) -> (u16, Value) {
    server.put("auth/kubernetes/login", None, json!({"role": role, "jwt": jwt}))
}

/// Asserts a 403 whose reason contains `reason`, and that the JWT is not echoed.
fn assert_refused(server: &TestServer, role: &str, jwt: &str, reason: &str) {
    let (status, body) = login(server, role, jwt);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0], json!("permission denied"), "{body}");
    let text = body["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>().join("; ");
    assert!(text.contains(reason), "expected {reason:?} in {text}");
    assert!(!text.contains(jwt), "the JWT was echoed: {text}");
}

#[test]
fn login_returns_the_roles_token_and_config_hides_the_reviewer_jwt() {
    let api = FakeApi::start();
    let server = TestServer::start();
    let root = setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    let r = Some(root.as_str());

    let (status, config) = server.get("auth/kubernetes/config", r);
    assert_eq!(status, 200);
    assert!(config["data"].get("token_reviewer_jwt").is_none(), "{config}");
    assert!(!config.to_string().contains(REVIEWER), "{config}");
    assert_eq!(config["data"]["token_reviewer_jwt_set"], json!(true));
    assert_eq!(config["data"]["kubernetes_host"], json!(api.host()));

    let jwt = sa_jwt("prod", "app-sa");
    let (status, answer) = login(&server, "app", &jwt);
    assert_eq!(status, 200, "{answer}");
    let auth = &answer["auth"];
    assert_eq!(auth["policies"], json!(["app-read", "default"]));
    assert_eq!(auth["lease_duration"], json!(3600));
    assert_eq!(auth["renewable"], json!(true));
    assert_eq!(
        auth["metadata"],
        json!({"role": "app", "service_account_name": "app-sa", "service_account_namespace": "prod",
               "service_account_uid": "uid-prod-app-sa", "service_account_secret_name": ""})
    );
    // The configured reviewer JWT is the bearer, and no audiences are sent without a role audience.
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, REVIEWER);
    assert_eq!(requests[0].1["spec"]["token"], json!(jwt));
    assert!(requests[0].1["spec"].get("audiences").is_none(), "{}", requests[0].1);
    // The stand-in itself requires a reviewer bearer: none, or an unknown one, is a 401.
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(api.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("{}/apis/authentication.k8s.io/v1/tokenreviews", api.host());
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": jwt}});
    assert_eq!(client.post(&url).json(&review).send().unwrap().status(), 401);
    assert_eq!(client.post(&url).bearer_auth("not-a-reviewer").json(&review).send().unwrap().status(), 401);
    let answer: Value = client.post(&url).bearer_auth(REVIEWER).json(&review).send().unwrap().json().unwrap();
    assert_eq!(answer["status"]["authenticated"], json!(true), "{answer}");
    assert_eq!(answer["status"]["user"]["uid"], json!("uid-prod-app-sa"), "{answer}");
    assert_eq!(answer["status"]["audiences"], json!(["https://kubernetes.default.svc"]), "{answer}");

    // The token reads what its policy allows and nothing else.
    let token = auth["client_token"].as_str().unwrap();
    let (status, me) = server.get("auth/token/lookup-self", Some(token));
    assert_eq!(status, 200);
    assert_eq!(me["data"]["path"], json!("auth/kubernetes/login"));
    assert_eq!(me["data"]["display_name"], json!("kubernetes-prod-app-sa"));
    let (status, secret) = server.get("secret/data/app/config", Some(token));
    assert_eq!(status, 200, "{secret}");
    assert_eq!(secret["data"]["data"]["password"], json!("s3cret"));
    assert_eq!(server.get("secret/data/other", Some(token)).0, 403);
    assert_eq!(server.get("auth/kubernetes/config", Some(token)).0, 403);

    // Role CRUD and list; batch tokens and incomplete bindings are refused clearly.
    let (status, role) = server.get("auth/kubernetes/role/app", r);
    assert_eq!(status, 200);
    assert_eq!(role["data"]["bound_service_account_namespaces"], json!(["prod", "team-*"]));
    assert_eq!(role["data"]["token_ttl"], json!(3600));
    assert_eq!(role["data"]["alias_name_source"], json!("serviceaccount_uid"));
    let (status, body) = server.put(
        "auth/kubernetes/role/batchy",
        r,
        json!({"bound_service_account_names": "a", "bound_service_account_namespaces": "b", "token_type": "batch"}),
    );
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("batch"), "{body}");
    let (status, body) = server.put("auth/kubernetes/role/half", r, json!({"bound_service_account_names": "a"}));
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("bound_service_account_namespaces"), "{body}");
    let (status, _) = server.put(
        "auth/kubernetes/role/other",
        r,
        json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*", "policies": "x"}),
    );
    assert_eq!(status, 204);
    let (_, list) = server.request("LIST", "auth/kubernetes/role", r, None);
    assert_eq!(list["data"]["keys"], json!(["app", "other"]));
    assert_eq!(server.request("DELETE", "auth/kubernetes/role/other", r, None).0, 204);
    assert_eq!(server.get("auth/kubernetes/role/other", r).0, 404);

    // The server log never carries a JWT.
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(!log.contains(&jwt) && !log.contains(REVIEWER));
}

#[test]
fn refusals_name_the_failing_check() {
    let api = FakeApi::start();
    let server = TestServer::start();
    let root = setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    let r = Some(root.as_str());

    // Glob bindings on both names and namespaces.
    assert_eq!(login(&server, "app", &sa_jwt("team-blue", "web-frontend")).0, 200);
    assert_refused(&server, "app", &sa_jwt("staging", "app-sa"), "namespace \"staging\" not authorized");
    assert_refused(&server, "app", &sa_jwt("prod", "db-sa"), "service account name \"db-sa\" not authorized");
    let sent = api.requests().len();
    assert_eq!(sent, 1, "binding failures must be refused before any TokenReview");

    // Expired.
    let mut claims = projected("prod", "app-sa", json!("x"));
    claims["exp"] = json!(now() - 3600);
    assert_refused(&server, "app", &rs256(&claims), "JWT expired");

    // Audience: string and list `aud`.
    let (status, _) = server.put(
        "auth/kubernetes/role/aud",
        r,
        json!({"bound_service_account_names": "app-sa", "bound_service_account_namespaces": "prod",
               "audience": "arcanum", "token_policies": "app-read"}),
    );
    assert_eq!(status, 204);
    assert_refused(&server, "aud", &rs256(&projected("prod", "app-sa", json!("vault"))), "audience mismatch");
    assert_refused(
        &server,
        "aud",
        &rs256(&projected("prod", "app-sa", json!(["vault", "other"]))),
        "audience mismatch",
    );
    assert_eq!(login(&server, "aud", &rs256(&projected("prod", "app-sa", json!("arcanum")))).0, 200);
    let (status, body) = login(&server, "aud", &rs256(&projected("prod", "app-sa", json!(["vault", "arcanum"]))));
    assert_eq!(status, 200, "{body}");
    let last = api.requests().pop().unwrap();
    assert_eq!(last.1["spec"]["audiences"], json!(["arcanum"]));

    // The API server says no: a token signed with another cluster's RSA key.
    let forged = rs256_with(OTHER_CLUSTER_KEY, &projected("prod", "app-sa", json!("x")));
    assert_refused(&server, "app", &forged, "did not authenticate");
    let (code, answer) = api.answers().pop().unwrap();
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["authenticated"], json!(false), "{answer}");
    assert!(answer["status"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");

    // A legacy secret-based token (no exp, flat claims) logs in and names its secret.
    let (status, body) = login(&server, "app", &rs256(&legacy("prod", "app-sa", "app-sa-token-x7k2p")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["auth"]["metadata"],
        json!({"role": "app", "service_account_name": "app-sa", "service_account_namespace": "prod",
               "service_account_uid": "uid-prod-app-sa", "service_account_secret_name": "app-sa-token-x7k2p"})
    );
    let (_, answer) = api.answers().pop().unwrap();
    assert_eq!(answer["status"]["user"]["username"], json!("system:serviceaccount:prod:app-sa"), "{answer}");
    assert_eq!(answer["status"]["user"]["uid"], json!("uid-prod-app-sa"), "{answer}");

    // A username that is not system:serviceaccount:<ns>:<name>.
    api.state().username_override = Some("system:serviceaccount:prod".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "not of the form");
    api.state().username_override = Some("system:serviceaccount:prod:other-sa".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "TokenReview returned username");
    api.state().username_override = Some("admin".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "not of the form");
    api.state().username_override = None;

    // The reviewer token is refused by the API server.
    api.state().reviewers = vec!["some-other-reviewer".into()];
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "rejected the reviewer token (401)");
    api.state().reviewers = vec![REVIEWER.into()];

    // Malformed input is a 400.
    let (status, body) = login(&server, "app", "not-a-jwt");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"], json!(["jwt is not a valid JWT"]));
    assert_eq!(server.put("auth/kubernetes/login", None, json!({"jwt": "x"})).1["errors"], json!(["missing role"]));
    assert_eq!(server.put("auth/kubernetes/login", None, json!({"role": "app"})).1["errors"], json!(["missing jwt"]));
    let (status, body) = login(&server, "nope", &sa_jwt("prod", "app-sa"));
    assert_eq!((status, body["errors"].clone()), (400, json!(["invalid role name \"nope\""])));

    // Issuer validation, when switched on.
    let config = json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": api.ca_pem, "token_reviewer_jwt": REVIEWER,
                        "issuer": "https://elsewhere", "disable_iss_validation": false});
    assert_eq!(server.put("auth/kubernetes/config", r, config).0, 204);
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "does not match the configured issuer");
    let config = json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": api.ca_pem, "token_reviewer_jwt": REVIEWER,
                        "issuer": "https://kubernetes.default.svc.cluster.local", "disable_iss_validation": false});
    assert_eq!(server.put("auth/kubernetes/config", r, config).0, 204);
    assert_eq!(login(&server, "app", &sa_jwt("prod", "app-sa")).0, 200);
}

#[test]
fn unreachable_api_server_and_wrong_ca_fail_fast_with_a_reason() {
    let api = FakeApi::start();
    let server = TestServer::start();
    let root = setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    let r = Some(root.as_str());

    // A certificate from another CA.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (status, body) = server.put(
        "auth/kubernetes/config",
        r,
        json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": other.cert.pem(), "token_reviewer_jwt": REVIEWER}),
    );
    assert_eq!(status, 204, "{body}");
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "TLS failure");
    assert!(api.requests().is_empty());

    // A closed port: refused quickly, not after a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (status, body) = server.put(
        "auth/kubernetes/config",
        r,
        json!({"kubernetes_host": format!("https://{closed}"), "kubernetes_ca_cert": api.ca_pem, "token_reviewer_jwt": REVIEWER}),
    );
    assert_eq!(status, 204, "{body}");
    let started = Instant::now();
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "unreachable");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());

    // Bad config is a 400.
    let (status, body) = server.put("auth/kubernetes/config", r, json!({"kubernetes_ca_cert": api.ca_pem}));
    assert_eq!((status, body["errors"].clone()), (400, json!(["no host provided"])));
    let (status, _) =
        server.put("auth/kubernetes/config", r, json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": "junk"}));
    assert_eq!(status, 400);
}

#[test]
fn reviewer_is_the_pod_token_file_reread_on_rotation_else_the_clients_jwt() {
    let api = FakeApi::start();
    let sa_dir = tempfile::tempdir().unwrap();
    std::fs::write(sa_dir.path().join("token"), "pod-token-1\n").unwrap();
    std::fs::write(sa_dir.path().join("ca.crt"), &api.ca_pem).unwrap();
    let server = TestServer::start_with_env(&[("ARCANUM_K8S_SA_DIR", sa_dir.path().to_str().unwrap())]);
    // No reviewer JWT and no CA in the config: both come from the pod's files.
    let init = server.init(1, 1);
    server.unseal(&init.keys);
    let r = Some(init.root_token.as_str());
    assert_eq!(server.put("sys/auth/kubernetes", r, json!({"type": "kubernetes"})).0, 204);
    assert_eq!(server.put("auth/kubernetes/config", r, json!({"kubernetes_host": api.host()})).0, 204);
    let role = json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"});
    assert_eq!(server.put("auth/kubernetes/role/any", r, role).0, 204);
    assert_eq!(server.get("auth/kubernetes/config", r).1["data"]["token_reviewer_jwt_set"], json!(false));

    api.state().reviewers = vec!["pod-token-1".into()];
    let jwt = sa_jwt("prod", "app-sa");
    assert_eq!(login(&server, "any", &jwt).0, 200);
    // The projected token rotates; the API server stops accepting the old one.
    std::fs::write(sa_dir.path().join("token"), "pod-token-2\n").unwrap();
    api.state().reviewers = vec!["pod-token-2".into()];
    let (status, body) = login(&server, "any", &jwt);
    assert_eq!(status, 200, "{body}");
    let bearers: Vec<String> = api.requests().into_iter().map(|(bearer, _)| bearer).collect();
    assert_eq!(bearers, ["pod-token-1", "pod-token-2"]);

    // With the local files disabled (and no reviewer JWT) the client's JWT reviews itself: the
    // API server accepts it as the bearer because it is a valid service-account token.
    api.state().reviewers.clear();
    let config = json!({"kubernetes_host": api.host(), "kubernetes_ca_cert": api.ca_pem, "disable_local_ca_jwt": true});
    assert_eq!(server.put("auth/kubernetes/config", r, config).0, 204);
    assert_eq!(login(&server, "any", &jwt).0, 200);
    assert_eq!(api.requests().pop().unwrap().0, jwt);
}

#[test]
fn pem_keys_verify_signatures_locally() {
    let api = FakeApi::start();
    let key = rcgen::KeyPair::generate().unwrap();
    api.state().ec_public_pem = Some(key.public_key_pem());
    let server = TestServer::start();
    setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER, "pem_keys": [key.public_key_pem()]}));

    let claims = projected("prod", "app-sa", json!("x"));
    let es256 = |pair: &rcgen::KeyPair| {
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &encoding).unwrap()
    };
    let (status, body) = login(&server, "app", &es256(&key));
    assert_eq!(status, 200, "{body}");
    // Signed by another key: refused locally, the API server is never asked.
    let before = api.requests().len();
    assert_refused(&server, "app", &es256(&rcgen::KeyPair::generate().unwrap()), "pem_keys");
    // HS256 is not a Kubernetes algorithm.
    let hs256 = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"k")).unwrap();
    assert_refused(&server, "app", &hs256, "not accepted");
    assert_eq!(api.requests().len(), before);
}

#[test]
fn external_secrets_operator_sequence() {
    let api = FakeApi::start();
    let server = TestServer::start();
    setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    // ESO: PUT login -> GET secret/data/<key> -> lookup-self -> revoke-self.
    let (status, answer) = login(&server, "app", &sa_jwt("prod", "app-sa"));
    assert_eq!(status, 200, "{answer}");
    let token = answer["auth"]["client_token"].as_str().unwrap();
    let (status, secret) = server.get("secret/data/app/config", Some(token));
    assert_eq!(status, 200);
    assert_eq!(secret["data"]["data"], json!({"username": "db-user", "password": "s3cret"}));
    let (status, me) = server.get("auth/token/lookup-self", Some(token));
    assert_eq!(status, 200);
    assert!(me["data"]["ttl"].is_u64() && me["data"]["ttl"].as_u64().unwrap() > 3500, "{me}");
    assert!(me["data"]["expire_time"].is_string(), "{me}");
    assert_eq!(me["data"]["type"], json!("service"));
    assert_eq!(server.put("auth/token/revoke-self", Some(token), json!({})).0, 204);
    assert_eq!(server.get("secret/data/app/config", Some(token)).0, 403);
}

#[test]
fn vault_agent_sequence_and_cli_login() {
    let api = FakeApi::start();
    let server = TestServer::start();
    setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    // Agent: login -> sys/internal/ui/mounts/<path> -> read -> renew-self increment 0.
    // (`sys/leases/renew` for dynamic credentials does not exist yet: issue 5.)
    let (status, answer) = login(&server, "app", &sa_jwt("prod", "app-sa"));
    assert_eq!(status, 200, "{answer}");
    let token = answer["auth"]["client_token"].as_str().unwrap();
    let (status, mount) = server.get("sys/internal/ui/mounts/secret/app/config", Some(token));
    assert_eq!(status, 200, "{mount}");
    assert_eq!(mount["data"]["options"]["version"], json!("2"));
    assert_eq!(mount["data"]["path"], json!("secret/"));
    assert_eq!(server.get("secret/data/app/config", Some(token)).0, 200);
    let (status, renewed) = server.put("auth/token/renew-self", Some(token), json!({"increment": 0}));
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["auth"]["lease_duration"], json!(3600));
    assert_eq!(renewed["auth"]["renewable"], json!(true));

    // CLI: jwt=@FILE, and the pod's token file by default (via ARCANUM_K8S_SA_DIR).
    let jwt_path = server.dir.path().join("sa-token");
    std::fs::write(&jwt_path, format!("{}\n", sa_jwt("prod", "app-sa"))).unwrap();
    let jwt_arg = format!("jwt=@{}", jwt_path.display());
    let (code, out, err) =
        server.cli(&["login", "-method=kubernetes", "-token-only", "-no-store", "role=app", &jwt_arg], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(server.get("secret/data/app/config", Some(out.trim())).0, 200);
    let sa_dir = tempfile::tempdir().unwrap();
    std::fs::write(sa_dir.path().join("token"), sa_jwt("prod", "app-sa")).unwrap();
    let env = [("ARCANUM_K8S_SA_DIR", sa_dir.path().to_str().unwrap())];
    let (code, out, err) = server.cli_with(&["login", "-method=kubernetes", "-token-only", "role=app"], &env, None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = server.cli_with(&["login", "-method=kubernetes", "-token-only", "role=nope"], &env, None);
    assert_ne!(code, 0);
    assert!(err.contains("invalid role name"), "{err}");
}
