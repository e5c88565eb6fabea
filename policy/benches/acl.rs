//! ACL benchmarks: decision latency and build time for 10 policies x 50 paths (target <= 2 us a decision).

use arcanum_policy::{Acl, AclRequest, Operation, Policy};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::time::Duration;

/// A realistic mix per policy: 20 exact paths, 20 globs and 10 `+` paths, spread over KV, PKI, auth and
/// sys mounts, with a few parameter constraints and denies.
fn policy_texts() -> Vec<String> {
    (0..10)
        .map(|p| {
            let mut text = String::new();
            for j in 0..50 {
                let (path, caps) = match j % 10 {
                    0 => (format!("secret/data/team{p}/app{j}"), r#"["read"]"#),
                    1 => (format!("secret/metadata/team{p}/app{j}"), r#"["list", "read"]"#),
                    2 => (format!("secret/data/team{p}/svc{j}/*"), r#"["create", "read", "update"]"#),
                    3 => (format!("kv{p}/app{j}/*"), r#"["read", "list"]"#),
                    4 => (format!("secret/+/team{p}/shared{j}"), r#"["read"]"#),
                    5 => (format!("pki{p}/issue/role{j}"), r#"["update"]"#),
                    6 => (format!("auth/approle/role/r{p}-{j}/*"), r#"["read"]"#),
                    7 => (format!("sys/policies/acl/team{p}-{j}"), r#"["read", "update"]"#),
                    8 => (format!("database{p}/creds/+/role{j}"), r#"["read"]"#),
                    _ => (format!("transit{p}/encrypt/key{j}*"), r#"["update"]"#),
                };
                text.push_str(&format!("path \"{path}\" {{\n  capabilities = {caps}\n"));
                if j % 7 == 0 {
                    text.push_str("  denied_parameters = { \"ttl\" = [] }\n");
                }
                text.push_str("}\n");
            }
            text.push_str(&format!("path \"secret/data/team{p}/private/*\" {{\n  capabilities = [\"deny\"]\n}}\n"));
            text
        })
        .collect()
}

fn bench_acl(c: &mut Criterion) {
    let policies: Vec<Policy> = policy_texts()
        .iter()
        .enumerate()
        .map(|(i, text)| Policy::parse(&format!("team{i}"), text).expect("bench policy parses"))
        .collect();
    let refs: Vec<&Policy> = policies.iter().collect();
    let acl = Acl::new(&refs);

    let glob_hit = AclRequest::new("secret/data/team4/svc32/config/db", Operation::Update);
    let exact_hit = AclRequest::new("secret/data/team7/app40", Operation::Read);
    let plus_hit = AclRequest::new("database3/creds/readonly/role48", Operation::Read);
    let miss = AclRequest::new("secret/data/team11/unknown/thing", Operation::Read);
    let folder = AclRequest::new("secret/metadata/team2/app21/", Operation::List);
    for request in [&glob_hit, &exact_hit, &plus_hit, &folder] {
        assert!(acl.check(request).allowed, "{request:?}");
    }
    assert!(!acl.check(&miss).allowed);
    let data = json!({"ttl": "1h"}).as_object().cloned().unwrap_or_default();
    let denied_param = AclRequest::new("secret/data/team0/app0", Operation::Read).with_parameters(&data);
    assert!(!acl.check(&denied_param).allowed);

    let mut group = c.benchmark_group("acl");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("check_match_glob", |b| b.iter(|| acl.check(black_box(&glob_hit))));
    group.bench_function("check_match_exact", |b| b.iter(|| acl.check(black_box(&exact_hit))));
    group.bench_function("check_match_plus", |b| b.iter(|| acl.check(black_box(&plus_hit))));
    group.bench_function("check_list_folder", |b| b.iter(|| acl.check(black_box(&folder))));
    group.bench_function("check_no_match", |b| b.iter(|| acl.check(black_box(&miss))));
    group.bench_function("check_denied_parameter", |b| b.iter(|| acl.check(black_box(&denied_param))));
    group.bench_function("build_10x50", |b| b.iter(|| Acl::new(black_box(&refs))));
    group.finish();
}

criterion_group!(benches, bench_acl);
criterion_main!(benches);
