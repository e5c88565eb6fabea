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

/// The "cluster's" service-account signing key for HS256 test tokens.
const CLUSTER_SECRET: &[u8] = b"cluster-signing-key";
const REVIEWER: &str = "reviewer-jwt-configured";

#[derive(Debug, Default)]
struct ApiState {
    /// (bearer, request body) of every TokenReview received.
    requests: Vec<(String, Value)>,
    /// When set, only this bearer may create TokenReviews (else 401).
    required_bearer: Option<String>,
    /// When set, every authenticated review answers with this username.
    username_override: Option<String>,
    /// EC public key (PEM) for ES256 tokens.
    ec_public_pem: Option<String>,
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
    if state.required_bearer.as_ref().is_some_and(|required| *required != bearer) || bearer.is_empty() {
        return (StatusCode::UNAUTHORIZED, Json(json!({"kind": "Status", "status": "Failure", "code": 401})));
    }
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let unauthenticated = || {
        (
            StatusCode::CREATED,
            Json(json!({"kind": "TokenReview", "status": {"authenticated": false, "error": "invalid bearer token"}})),
        )
    };
    let Ok(header) = jsonwebtoken::decode_header(token) else { return unauthenticated() };
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let key = match header.alg {
        Algorithm::HS256 => DecodingKey::from_secret(CLUSTER_SECRET),
        Algorithm::ES256 => match &state.ec_public_pem {
            Some(pem) => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            None => return unauthenticated(),
        },
        _ => return unauthenticated(),
    };
    let Ok(data) = jsonwebtoken::decode::<Value>(token, &key, &validation) else { return unauthenticated() };
    let claims = data.claims;
    let token_aud: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let audiences: Vec<String> = if wanted.is_empty() {
        token_aud
    } else {
        let both: Vec<String> = wanted.into_iter().filter(|a| token_aud.contains(a)).collect();
        if both.is_empty() {
            return unauthenticated();
        }
        both
    };
    let sa = &claims["kubernetes.io"];
    let (ns, name, uid) = if sa.is_object() {
        (sa["namespace"].clone(), sa["serviceaccount"]["name"].clone(), sa["serviceaccount"]["uid"].clone())
    } else {
        (
            claims["kubernetes.io/serviceaccount/namespace"].clone(),
            claims["kubernetes.io/serviceaccount/service-account.name"].clone(),
            claims["kubernetes.io/serviceaccount/service-account.uid"].clone(),
        )
    };
    let username = state.username_override.clone().unwrap_or_else(|| {
        format!("system:serviceaccount:{}:{}", ns.as_str().unwrap_or_default(), name.as_str().unwrap_or_default())
    });
    (
        StatusCode::CREATED,
        Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "status": {
                "authenticated": true,
                "user": {"username": username, "uid": uid, "groups": ["system:serviceaccounts"]},
                "audiences": audiences,
            }
        })),
    )
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

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(CLUSTER_SECRET)).unwrap()
}

fn sa_jwt(ns: &str, name: &str) -> String {
    hs256(&projected(ns, name, json!(["https://kubernetes.default.svc"])))
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
    api.state().required_bearer = Some(REVIEWER.into());
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
    assert_refused(&server, "app", &hs256(&claims), "JWT expired");

    // Audience: string and list `aud`.
    let (status, _) = server.put(
        "auth/kubernetes/role/aud",
        r,
        json!({"bound_service_account_names": "app-sa", "bound_service_account_namespaces": "prod",
               "audience": "arcanum", "token_policies": "app-read"}),
    );
    assert_eq!(status, 204);
    assert_refused(&server, "aud", &hs256(&projected("prod", "app-sa", json!("vault"))), "audience mismatch");
    assert_refused(
        &server,
        "aud",
        &hs256(&projected("prod", "app-sa", json!(["vault", "other"]))),
        "audience mismatch",
    );
    assert_eq!(login(&server, "aud", &hs256(&projected("prod", "app-sa", json!("arcanum")))).0, 200);
    let (status, body) = login(&server, "aud", &hs256(&projected("prod", "app-sa", json!(["vault", "arcanum"]))));
    assert_eq!(status, 200, "{body}");
    let last = api.requests().pop().unwrap();
    assert_eq!(last.1["spec"]["audiences"], json!(["arcanum"]));

    // The API server says no: a token signed with another key.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &projected("prod", "app-sa", json!("x")),
        &EncodingKey::from_secret(b"another cluster"),
    )
    .unwrap();
    assert_refused(&server, "app", &forged, "did not authenticate");

    // A username that is not system:serviceaccount:<ns>:<name>.
    api.state().username_override = Some("system:serviceaccount:prod".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "not of the form");
    api.state().username_override = Some("system:serviceaccount:prod:other-sa".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "TokenReview returned username");
    api.state().username_override = Some("admin".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "not of the form");
    api.state().username_override = None;

    // The reviewer token is refused by the API server.
    api.state().required_bearer = Some("some-other-reviewer".into());
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "rejected the reviewer token (401)");
    api.state().required_bearer = None;

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

    api.state().required_bearer = Some("pod-token-1".into());
    let jwt = sa_jwt("prod", "app-sa");
    assert_eq!(login(&server, "any", &jwt).0, 200);
    // The projected token rotates; the API server stops accepting the old one.
    std::fs::write(sa_dir.path().join("token"), "pod-token-2\n").unwrap();
    api.state().required_bearer = Some("pod-token-2".into());
    let (status, body) = login(&server, "any", &jwt);
    assert_eq!(status, 200, "{body}");
    let bearers: Vec<String> = api.requests().into_iter().map(|(bearer, _)| bearer).collect();
    assert_eq!(bearers, ["pod-token-1", "pod-token-2"]);

    // With the local files disabled (and no reviewer JWT) the client's JWT reviews itself.
    api.state().required_bearer = None;
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
    assert_refused(&server, "app", &sa_jwt("prod", "app-sa"), "not accepted");
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
