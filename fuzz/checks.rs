//! The checks behind each fuzz target, shared with `tests/tests/fuzz_regressions.rs`, which runs
//! every kept input (fuzz/regressions/<target>/) through the same check on stable Rust in CI.
//! Each check may refuse its input; it panics only on a bug.

pub mod policy {
    //! The ACL policy parser (HCL and JSON), then the compiled ACL answering requests
    //! on paths taken from the input. Neither may panic, whatever the text.
    use arcanum_policy::{Acl, AclRequest, Operation, Policy};

    const OPERATIONS: [Operation; 6] =
        [Operation::Read, Operation::List, Operation::Create, Operation::Update, Operation::Patch, Operation::Delete];

    pub fn check(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let Ok(policy) = Policy::parse("fuzz", text) else { return };
        let acl = Acl::new(&[&policy]);
        let parameters = serde_json::Map::new();
        // The policy's own paths, and variations of them, as request paths.
        for rule in policy.rules() {
            let path = rule.path();
            for candidate in
                [path.to_owned(), format!("{path}x"), path.trim_end_matches('*').to_owned(), path.replace('+', "seg")]
            {
                for operation in OPERATIONS {
                    let _ =
                        acl.check(&AclRequest::new(&candidate, operation).with_parameters(&parameters).with_sudo(true));
                }
            }
        }
    }
}

pub mod config {
    //! The server config parser, HCL or JSON (chosen by the first byte). It may
    //! refuse anything, but never panic.
    use arcanum_config::{parse, Format};

    pub fn check(data: &[u8]) {
        let Some((first, rest)) = data.split_first() else { return };
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let format = if first % 2 == 0 { Format::Hcl } else { Format::Json };
        let _ = parse(text, format, "fuzz.hcl");
    }
}

pub mod barrier_entry {
    //! Decoding a barrier entry read from storage (version, term, nonce, ciphertext,
    //! tag). Any bytes must give an error or, for a genuine entry, its plaintext — never a panic,
    //! and never a plaintext for an entry that was not sealed under this keyring and path.
    use std::sync::{Arc, OnceLock};

    use arcanum_core::barrier::Barrier;
    use arcanum_crypto::Keyring;
    use arcanum_storage::InmemBackend;

    fn barrier() -> &'static (Arc<Barrier>, Vec<u8>) {
        static BARRIER: OnceLock<(Arc<Barrier>, Vec<u8>)> = OnceLock::new();
        BARRIER.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let barrier = runtime
                .block_on(Barrier::open(Arc::new(InmemBackend::new()), Keyring::generate(0), u64::MAX))
                .expect("barrier");
            let (genuine, _) = barrier.encrypt("logical/path", b"plaintext");
            (barrier, genuine)
        })
    }

    pub fn check(data: &[u8]) {
        let (barrier, genuine) = barrier();
        if let Ok(plain) = barrier.decrypt("logical/path", data) {
            // Only the untouched genuine entry opens (AES-GCM authenticates every byte).
            assert_eq!(data, genuine.as_slice());
            assert_eq!(plain, b"plaintext");
        }
        // Flipping one byte of the genuine entry, chosen by the input, must always be refused.
        if let Some(first) = data.first() {
            let mut tampered = genuine.clone();
            let at = usize::from(*first) % tampered.len();
            tampered[at] ^= data.get(1).copied().unwrap_or(1).max(1);
            assert!(barrier.decrypt("logical/path", &tampered).is_err());
        }
    }
}

pub mod shamir_combine {
    //! Shamir combine on arbitrary shares (wrong lengths, repeated x, zero x, too
    //! few), and split-then-combine round trips of a secret taken from the input.
    use arcanum_crypto::shamir;

    pub fn check(data: &[u8]) {
        let Some((&header, rest)) = data.split_first() else { return };
        // Arbitrary shares: the header picks how many, the rest is cut evenly.
        let count = usize::from(header % 8) + 1;
        let len = rest.len() / count;
        if len > 0 {
            let shares: Vec<&[u8]> = rest.chunks(len).take(count).collect();
            let _ = shamir::combine(&shares);
        }
        // A round trip: any threshold-sized subset of a split gives the secret back.
        if !rest.is_empty() && rest.len() <= 64 {
            let parts = usize::from(header % 5) + 2;
            let threshold = usize::from(header / 5 % parts as u8) + 1;
            let threshold = if parts > 1 && threshold == 1 { 2 } else { threshold };
            if let Ok(shares) = shamir::split(rest, parts, threshold) {
                let subset: Vec<&[u8]> = shares.iter().rev().take(threshold).map(|s| s.as_slice()).collect();
                assert_eq!(shamir::combine(&subset).expect("combine").as_slice(), rest);
            }
        }
    }
}

pub mod unseal_key {
    //! Decoding an unseal key share as an operator types it (hex or base64, spaces
    //! around it), then combining it with itself and with a genuine share.
    use arcanum::sys::decode_share;
    use arcanum_crypto::shamir;

    pub fn check(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let Ok(share) = decode_share(text) else { return };
        let _ = shamir::combine(&[share.as_slice()]);
        let genuine = shamir::split(&[7u8; 32], 3, 2).expect("split");
        let _ = shamir::combine(&[genuine[0].as_slice(), share.as_slice()]);
    }
}

pub mod kubernetes_jwt {
    //! The local checks of a Kubernetes service-account JWT before any TokenReview
    //! (shape, base64url segments, JSON claims, times, issuer/audience, signature against a PEM
    //! key). Every input must be refused or accepted without a panic.
    use arcanum_engines::kubernetes::review::parse_jwt;

    /// An EC P-256 public key, so the signature path runs too.
    const PEM: &str = "-----BEGIN PUBLIC KEY-----
    MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcArRdIE3u3VlJSPxgqJ/+eOcZ79f
    pxZ0kQTaTad7XmjnllqiNOawTBkq1xtS0Msu9JXKA0X/+d6EIq9J2nmOZw==
    -----END PUBLIC KEY-----";

    pub fn check(data: &[u8]) {
        let Ok(jwt) = std::str::from_utf8(data) else { return };
        if let Ok(claims) = parse_jwt(jwt, &[]) {
            let _ = claims.check_time();
        }
        let _ = parse_jwt(jwt, &[PEM.to_owned()]);
    }
}

pub mod http_request {
    //! An HTTP request, from raw method, path, query, headers and body, through the
    //! whole server (path normalisation, query and body decoding, router, ACL, handlers) on an
    //! in-memory core. It must never panic, and every error must be Vault's `{"errors": [...]}`.
    //
    // The token holds every capability except on paths that would let the fuzzer write files
    // (audit devices), reach the network (new mounts or auth methods), block itself (quotas)
    // or seal the server; half the inputs carry no token at all.
    use std::sync::{Arc, OnceLock};

    use arcanum_contract::mount::{MountEntry, MountTableKind};
    use arcanum_core::{Core, CoreConfig, SealConfig};
    use arcanum_storage::InmemBackend;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    const POLICY: &str = r#"
    path "*" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }
    path "sys/audit*" { capabilities = ["deny"] }
    path "sys/mounts/*" { capabilities = ["deny"] }
    path "sys/auth/*" { capabilities = ["deny"] }
    path "sys/quotas/*" { capabilities = ["deny"] }
    path "sys/seal" { capabilities = ["deny"] }
    path "sys/rekey/*" { capabilities = ["deny"] }
    path "sys/remount" { capabilities = ["deny"] }
    "#;

    struct World {
        runtime: tokio::runtime::Runtime,
        app: arcanum::http::App,
        token: String,
    }

    fn world() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let (app, token) = runtime.block_on(async {
                let core = Arc::new(
                    Core::new(Arc::new(InmemBackend::new()), CoreConfig::default(), arcanum::catalog::catalog())
                        .await
                        .unwrap(),
                );
                let output = core.initialize(SealConfig::new(1, 1).unwrap()).await.unwrap();
                core.submit_unseal_share(output.shares[0].clone()).await.unwrap();
                let unsealed = core.unsealed().unwrap();
                let mut kv = MountEntry::new(MountTableKind::Secret, "secret/", "kv", "");
                kv.options.insert("version".into(), "2".into());
                unsealed.mounts.enable(kv).await.unwrap();
                unsealed.mounts.enable(MountEntry::new(MountTableKind::Secret, "kv1/", "kv", "")).await.unwrap();
                unsealed
                    .mounts
                    .enable(MountEntry::new(MountTableKind::Auth, "userpass/", "userpass", ""))
                    .await
                    .unwrap();
                let app = arcanum::http::app(
                    Arc::clone(&core),
                    Some(1 << 20),
                    Arc::new(arcanum::forward::Forwarder::redirect_only()),
                );
                let root = output.root_token.to_string();
                let write = |path: &str, body: serde_json::Value| {
                    Request::put(format!("/v1/{path}"))
                        .header("X-Vault-Token", &root)
                        .body(Body::from(body.to_string()))
                        .unwrap()
                };
                app.clone()
                    .oneshot(write("sys/policies/acl/fuzz", serde_json::json!({ "policy": POLICY })))
                    .await
                    .unwrap();
                let created = app
                    .clone()
                    .oneshot(write("auth/token/create", serde_json::json!({ "policies": ["fuzz"], "ttl": "768h" })))
                    .await
                    .unwrap();
                let body = axum::body::to_bytes(created.into_body(), usize::MAX).await.unwrap();
                let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["auth"]["client_token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (app, token)
            });
            World { runtime, app, token }
        })
    }

    const METHODS: [&str; 8] = ["GET", "PUT", "POST", "DELETE", "LIST", "PATCH", "HEAD", "OPTIONS"];

    pub fn check(data: &[u8]) {
        let Some((&selector, rest)) = data.split_first() else { return };
        let world = world();
        // "<path>\n<header line>\n<body>": the path may carry a query; one extra header.
        let mut parts = rest.splitn(3, |b| *b == b'\n');
        let target = parts.next().unwrap_or_default();
        let header = parts.next().unwrap_or_default();
        let body = parts.next().unwrap_or_default().to_vec();
        let Ok(target) = std::str::from_utf8(target) else { return };
        let mut request =
            Request::builder().method(METHODS[usize::from(selector) % METHODS.len()]).uri(format!("/v1/{target}"));
        if selector & 0x10 != 0 {
            request = request.header("X-Vault-Token", &world.token);
        }
        if selector & 0x20 != 0 {
            request = request.header("Content-Type", "application/merge-patch+json");
        }
        if let Some((name, value)) = std::str::from_utf8(header).ok().and_then(|h| h.split_once(':')) {
            request = request.header(name.trim(), value.trim());
        }
        let Ok(request) = request.body(Body::from(body)) else { return };
        let response = world.runtime.block_on(world.app.clone().oneshot(request)).expect("infallible");
        let status = response.status();
        let bytes = world.runtime.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("body");
        if status.as_u16() >= 400 && !bytes.is_empty() {
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("an error body is JSON");
            // Vault's one exception: KV v2 answers a deleted or destroyed version with 404 and
            // the full envelope, so that clients can read its metadata.
            let kv2_deleted_version = status.as_u16() == 404 && parsed["data"]["metadata"].is_object();
            assert!(
                parsed["errors"].is_array() || kv2_deleted_version,
                "{status}: error body without an errors list: {parsed}"
            );
        }
    }
}
