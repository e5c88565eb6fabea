//! End to end: the `arcanum` CLI against the real server, over HTTP and over TLS.

use arcanum_tests::{binary, TestServer};
use serde_json::{json, Value};

#[test]
fn operator_commands_drive_the_whole_seal_lifecycle() {
    let server = TestServer::start();
    let (code, _, stderr) = server.cli(&["status"], None);
    assert_eq!(code, 2, "status of an uninitialised (sealed) server exits 2: {stderr}");
    let (code, _, _) = server.cli(&["operator", "init", "-status"], None);
    assert_eq!(code, 2);

    let (code, stdout, stderr) =
        server.cli(&["operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json"], None);
    assert_eq!(code, 0, "{stderr}");
    let init: Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<String> =
        init["unseal_keys_b64"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    let root = init["root_token"].as_str().unwrap().to_owned();
    assert_eq!(keys.len(), 3);
    assert_eq!(init["unseal_threshold"], json!(2));

    let (code, stdout, _) = server.cli(&["operator", "unseal", &keys[0]], None);
    assert_eq!(code, 0);
    assert!(stdout.contains("Unseal Progress") && stdout.contains("1/2"), "{stdout}");
    let (code, stdout, _) = server.cli(&["operator", "unseal", "-format=json", &keys[2]], None);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["sealed"], json!(false));
    let (code, stdout, _) = server.cli(&["status"], None);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("Sealed") && stdout.contains("false"));

    let (code, stdout, stderr) = server.cli(&["operator", "rotate"], Some(&root));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Key Term") && stdout.contains('2'), "{stdout}");

    // Rekey through the CLI: init, then two current shares.
    let (code, _, stderr) = server.cli(&["operator", "rekey", "-init", "-key-shares=2", "-key-threshold=2"], None);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = server.cli(&["operator", "rekey", &keys[0]], None);
    assert_eq!(code, 0);
    let (code, stdout, stderr) = server.cli(&["operator", "rekey", "-format=json", &keys[1]], None);
    assert_eq!(code, 0, "{stderr}");
    let rekeyed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rekeyed["complete"], json!(true));
    assert_eq!(rekeyed["keys"].as_array().unwrap().len(), 2);

    // Seal without a token fails with Vault's error layout and exit 1; with the root token it works.
    let (code, _, stderr) = server.cli(&["operator", "seal"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("Code: 403") && stderr.contains("permission denied"), "{stderr}");
    let (code, _, _) = server.cli(&["operator", "seal"], Some(&root));
    assert_eq!(code, 0);
    assert_eq!(server.cli(&["status"], None).0, 2);

    // A bad share is an error (exit 1), a usage error exits 2.
    let (code, _, stderr) = server.cli(&["operator", "unseal", "not-a-key!"], None);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, _) = server.cli(&["operator", "init", "-key-shares=many"], None);
    assert_eq!(code, 2);
    let (code, _, _) = server.cli(&["frobnicate"], None);
    assert_eq!(code, 2);
}

#[test]
fn server_speaks_tls_and_the_cli_verifies_it_with_a_ca_file() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let mut server = TestServer::start_with(|dir| {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        format!(
            "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n  tls_min_version = \"tls13\"\n}}\n",
            cert_path.display(),
            key_path.display()
        )
    });
    assert!(server.addr.starts_with("https://"), "{}", server.addr);
    let ca_path = server.dir.path().join("cert.pem");
    server.trust(cert.cert.pem().as_bytes(), ca_path);
    let (status, body) = server.get("sys/seal-status", None);
    assert_eq!(status, 200);
    assert_eq!(body["storage_type"], json!("inmem"));
    let (code, stdout, stderr) = server.cli(&["status", "-format=json"], None);
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["initialized"], json!(false));

    // Without the CA the CLI refuses the connection.
    let output = std::process::Command::new(binary())
        .args(["status"])
        .env("ARCANUM_ADDR", &server.addr)
        .env_remove("ARCANUM_CACERT")
        .env_remove("VAULT_CACERT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn dev_server_starts_unsealed_and_prints_its_credentials() {
    let mut child = std::process::Command::new(binary())
        .args(["server", "-dev", "-dev-listen-address=127.0.0.1:0", "-dev-root-token-id=hvs.devroottoken"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut unseal_key = None;
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(key) = line.strip_prefix("Unseal Key: ") {
            unseal_key = Some(key.to_owned());
        }
        if let Some(url) = line.strip_prefix("arcanum: listening on ") {
            addr = Some(url.to_owned());
            break;
        }
    }
    let addr = addr.expect("dev server address");
    assert!(unseal_key.is_some_and(|k| !k.is_empty()));
    let client = reqwest::blocking::Client::new();
    let status: Value = client.get(format!("{addr}/v1/sys/seal-status")).send().unwrap().json().unwrap();
    assert_eq!(status["sealed"], json!(false));
    assert_eq!(status["storage_type"], json!("inmem"));
    let key_status =
        client.get(format!("{addr}/v1/sys/key-status")).header("X-Vault-Token", "hvs.devroottoken").send().unwrap();
    assert_eq!(key_status.status().as_u16(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
