//! End to end: the Kubernetes auth method against a stand-in API server (HTTPS with its own
//! self-signed certificate) that answers TokenReviews the way Kubernetes does and records
//! every request, so the tests can see the reviewer bearer and the audiences Arcanum sent.

#[path = "kubernetes/standin.rs"]
mod standin;

use std::time::{Duration, Instant};

use arcanum_tests::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use standin::*;

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

    // Entity alias: the same service account (by uid) is the same entity at every login,
    // another one is another entity; with alias_name_source=serviceaccount_name the alias is
    // namespace/name, so the entity changes with the source.
    let entity = auth["entity_id"].as_str().unwrap().to_owned();
    assert_eq!(entity.len(), 36, "{auth}");
    assert_eq!(me["data"]["entity_id"], json!(entity));
    let (_, again) = login(&server, "app", &jwt);
    assert_eq!(again["auth"]["entity_id"], json!(entity));
    let (_, other) = login(&server, "app", &sa_jwt("prod", "web-1"));
    assert_ne!(other["auth"]["entity_id"], json!(entity));
    let (status, body) = server.put("auth/kubernetes/role/app", r, json!({"alias_name_source": "serviceaccount_name"}));
    assert_eq!(status, 204, "{body}");
    let (_, by_name) = login(&server, "app", &jwt);
    let by_name = by_name["auth"]["entity_id"].as_str().unwrap().to_owned();
    assert!(by_name.len() == 36 && by_name != entity);
    assert_eq!(login(&server, "app", &jwt).1["auth"]["entity_id"], json!(by_name));
    server.put("auth/kubernetes/role/app", r, json!({"alias_name_source": "serviceaccount_uid"}));

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
    let root = setup(&server, &api, json!({"token_reviewer_jwt": REVIEWER}));
    // Dynamic credentials for the agent's template: MariaDB at $ARCANUM_TEST_MYSQL_ADDR.
    let mysql = std::env::var("ARCANUM_TEST_MYSQL_ADDR").unwrap_or_else(|_| "127.0.0.1:3306".into());
    let r = Some(root.as_str());
    assert_eq!(server.put("sys/mounts/database", r, json!({"type": "database"})).0, 204);
    let (status, answer) = server.put(
        "database/config/maria",
        r,
        json!({"plugin_name": "mysql-database-plugin", "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({mysql})/"),
               "username": "root", "password": "", "allowed_roles": "app"}),
    );
    assert_eq!(status, 204, "MariaDB at {mysql} (root, empty password) is required: {answer}");
    let (status, answer) = server.put(
        "database/roles/app",
        r,
        json!({"db_name": "maria", "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"],
               "default_ttl": "10m", "max_ttl": "1h"}),
    );
    assert_eq!(status, 204, "{answer}");
    let policy = "path \"secret/data/app/*\" { capabilities = [\"read\"] }\npath \"database/creds/app\" { capabilities = [\"read\"] }";
    assert_eq!(server.put("sys/policies/acl/app-read", r, json!({"policy": policy})).0, 204);
    // Agent: login -> sys/internal/ui/mounts/<path> -> read -> renew-self increment 0 ->
    // dynamic creds -> sys/leases/renew with increment 0 (the default policy allows it).
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
    let (status, creds) = server.get("database/creds/app", Some(token));
    assert_eq!(status, 200, "{creds}");
    let lease_id = creds["lease_id"].as_str().unwrap();
    assert!(creds["data"]["username"].as_str().unwrap().starts_with("v-kubernetes"), "{creds}");
    let (status, renewed) = server.put("sys/leases/renew", Some(token), json!({"lease_id": lease_id, "increment": 0}));
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["lease_id"], json!(lease_id));
    assert_eq!(renewed["lease_duration"], json!(600));
    assert_eq!(renewed["renewable"], json!(true));
    // The agent's token goes, and with it the database user it was given.
    assert_eq!(server.put("auth/token/revoke-self", Some(token), json!({})).0, 204);
    let (status, _) = server.put("sys/leases/lookup", r, json!({"lease_id": lease_id}));
    assert_eq!(status, 400, "the lease went with the token");

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

#[test]
fn escaped_newlines_in_pem_are_accepted_and_the_config_reads_back_as_written() {
    let api = FakeApi::start();
    let key = rcgen::KeyPair::generate().unwrap();
    api.state().ec_public_pem = Some(key.public_key_pem());
    let server = TestServer::start();
    // As pasted through a JSON or shell layer: the line breaks are the two characters `\n`.
    let escaped_ca = api.ca_pem.replace('\n', "\\n");
    let escaped_key = key.public_key_pem().replace('\n', "\\n");
    let written = json!({
        "kubernetes_ca_cert": escaped_ca,
        "token_reviewer_jwt": REVIEWER,
        "pem_keys": [escaped_key],
        "issuer": "https://kubernetes.default.svc.cluster.local",
        "disable_local_ca_jwt": true,
    });
    let root = setup(&server, &api, written.clone());
    let (status, config) = server.get("auth/kubernetes/config", Some(&root));
    assert_eq!(status, 200, "{config}");
    for field in ["kubernetes_ca_cert", "pem_keys", "issuer", "disable_local_ca_jwt"] {
        assert_eq!(config["data"][field], written[field], "{field} reads back as written");
    }
    assert_eq!(config["data"]["kubernetes_host"], json!(api.host()));

    // Both PEMs are in use: TLS to the stand-in verifies against the CA and the JWT's
    // signature against the key.
    let claims = projected("prod", "app-sa", json!("x"));
    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &encoding).unwrap();
    let (status, body) = login(&server, "app", &jwt);
    assert_eq!(status, 200, "{body}");
}
