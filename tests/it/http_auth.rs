//! The HTTP port under `[auth]`: AWS SigV4 (boto3, unchanged) and Bearer
//! secrets, each key limited by its role, refusals in the client's
//! protocol; HTTPS on the same port; certificates reloaded on SIGHUP;
//! and, without `[auth]`, requests naming a foreign host or web origin
//! refused (DNS rebinding, cross-site forms).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{connect, scalar, wait_for, Server};
use crate::tls::{make_certificates, psql};

const PASSWORD: &str = "correct horse battery staple";
const KEYS: [(&str, &str, &str); 3] = [
    ("AKIDADMIN", "admin-secret-1", "sluice"),
    ("AKIDWRITER", "writer-secret-2", "sluice_writer"),
    ("AKIDREADER", "reader-secret-3", "sluice_reader"),
];

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A config with a password, the three keys and (optionally) TLS.
fn auth_config(dir: &Path, tls: Option<bool>) -> std::path::PathBuf {
    let mut toml = format!(
        "[auth]\npassword_file = \"{}\"\n",
        secret_file(dir, "sluice.pw", PASSWORD)
    );
    for (id, secret, role) in KEYS {
        toml.push_str(&format!(
            "[[auth.access_keys]]\nid = \"{id}\"\nsecret_file = \"{}\"\nrole = \"{role}\"\n",
            secret_file(dir, &format!("{id}.key"), secret)
        ));
    }
    if let Some(require) = tls {
        make_certificates(dir);
        toml.push_str(&format!(
            "[tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\nrequire = {require}\n",
            dir.display()
        ));
    }
    let config = dir.join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    config
}

fn boto3(endpoint: &str, ca: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/kinesis_auth_boto3.py");
    let mut args = vec![script.display().to_string(), endpoint.into(), ca.into()];
    for (id, secret, _) in KEYS {
        args.extend([id.to_string(), secret.to_string()]);
    }
    let out = Command::new("python3")
        .args(&args)
        .output()
        .expect("python3 runs (and boto3 is installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn refused_with(findings: &Value, call: &str, code: &str) {
    let call_result = &findings[call];
    assert_eq!(call_result["ok"], false, "{call}: {call_result}");
    assert_eq!(call_result["code"], code, "{call}: {call_result}");
    let message = call_result["message"].as_str().unwrap_or_default();
    for (_, secret, _) in KEYS {
        assert!(
            !message.contains(secret),
            "{call} leaks a secret: {message}"
        );
    }
}

#[tokio::test]
async fn boto3_signs_with_access_keys_and_each_key_does_what_its_role_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path(), Some(false));
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let ca = tmp.path().join("ca.pem").display().to_string();
    let port = server.http_addr.port();
    for (endpoint, ca) in [
        (format!("http://127.0.0.1:{port}"), "-".to_string()),
        (format!("https://localhost:{port}"), ca),
    ] {
        let findings = boto3(&endpoint, &ca);
        assert_eq!(
            findings["admin_create"]["ok"], true,
            "{endpoint}: {findings}"
        );
        assert_eq!(findings["writer_put"]["ok"], true, "{endpoint}: {findings}");
        let listed = &findings["reader_list"]["result"];
        assert!(
            listed.as_array().is_some_and(|a| !a.is_empty()),
            "{findings}"
        );
        refused_with(&findings, "reader_create", "AccessDeniedException");
        refused_with(&findings, "reader_put", "AccessDeniedException");
        refused_with(&findings, "writer_delete", "AccessDeniedException");
        refused_with(&findings, "wrong_secret", "InvalidSignatureException");
        refused_with(&findings, "unknown_key", "UnrecognizedClientException");
        let denied = findings["reader_put"]["message"].as_str().unwrap();
        assert!(
            denied.contains("AKIDREADER") && denied.contains("sluice_writer"),
            "{denied}"
        );
    }
    // Exactly the writer's records were stored, one per endpoint.
    let conninfo = format!(
        "host=127.0.0.1 port={} user=sluice dbname=sluice password='{PASSWORD}'",
        server.pg_addr.port()
    );
    let client = connect(&conninfo).await.unwrap();
    for stream in ["signed_plain", "signed_tls"] {
        assert_eq!(
            scalar(&client, &format!("SELECT count(*) FROM {stream}")).await,
            1
        );
    }
}

#[tokio::test]
async fn bearer_secrets_on_the_records_api_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path(), None);
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=sluice dbname=sluice password='{PASSWORD}'",
        server.pg_addr.port()
    );
    let client = connect(&conninfo).await.unwrap();
    client
        .batch_execute("CREATE STREAM s (n BIGINT)")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr);
    let post = |bearer: Option<&str>| {
        let mut request = http
            .post(format!("{base}/v1/streams/s/records"))
            .header("content-type", "application/x-ndjson")
            .body("{\"n\": 1}\n");
        if let Some(secret) = bearer {
            request = request.bearer_auth(secret);
        }
        request.send()
    };
    let missing = post(None).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error_code"],
        "28000"
    );
    let wrong = post(Some("guess")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error_code"], "28P01");
    let reader = post(Some(KEYS[2].1)).await.unwrap();
    assert_eq!(reader.status(), 403);
    let body: Value = reader.json().await.unwrap();
    assert_eq!(body["error_code"], "42501", "{body}");
    let message = body["error_message"].as_str().unwrap();
    assert!(
        message.contains("AKIDREADER") && !message.contains(KEYS[2].1),
        "{message}"
    );
    let writer = post(Some(KEYS[1].1)).await.unwrap();
    assert_eq!(writer.status(), 200, "{:?}", writer.text().await);
    assert_eq!(scalar(&client, "SELECT count(*) FROM s").await, 1);

    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 401);
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(KEYS[2].1)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("sluice_stream_records"));
}

#[tokio::test]
async fn without_auth_foreign_hosts_and_web_origins_are_refused() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM s (n BIGINT)")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/streams/s/records", server.http_addr);
    let post = |header: Option<(&'static str, &'static str)>| {
        let mut request = http
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body("{\"n\": 1}\n");
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send()
    };
    for header in [
        ("host", "rebound.evil.example"),
        ("origin", "http://evil.example"),
    ] {
        let refused = post(Some(header)).await.unwrap();
        assert_eq!(refused.status(), 403, "{header:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error_code"], "42501", "{body}");
    }
    for header in [None, Some(("origin", "http://localhost:3000"))] {
        assert_eq!(post(header).await.unwrap().status(), 200, "{header:?}");
    }
    assert_eq!(scalar(&client, "SELECT count(*) FROM s").await, 2);
}

fn https_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_is_served_and_plaintext_refused_when_tls_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path(), Some(true));
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let port = server.http_addr.port();
    let https = https_client(&tmp.path().join("ca.pem"));
    let health = https
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("requires HTTPS"));
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_not_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, live) = (
        tmp.path().join("old"),
        tmp.path().join("new"),
        tmp.path().join("live"),
    );
    for dir in [&old, &new, &live] {
        std::fs::create_dir_all(dir).unwrap();
    }
    make_certificates(&old);
    make_certificates(&new);
    let install = |from: &Path| {
        for file in ["server.pem", "server.key"] {
            std::fs::copy(from.join(file), live.join(file)).unwrap();
        }
    };
    install(&old);
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n",
            live.display()
        ),
    )
    .unwrap();
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let verifies = |ca: &Path| {
        psql(&server, "localhost", "verify-full", ca)
            .status
            .success()
    };
    assert!(verifies(&old.join("ca.pem")));
    assert!(!verifies(&new.join("ca.pem")));

    install(&new);
    server.hangup();
    wait_for("the new certificate", Duration::from_secs(10), async || {
        verifies(&new.join("ca.pem"))
    })
    .await;
    assert!(!verifies(&old.join("ca.pem")));
    let port = server.http_addr.port();
    let https = https_client(&new.join("ca.pem"));
    let health = https
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await;
    assert_eq!(health.unwrap().status(), 200);

    // A broken renewal: the server keeps the certificate it has.
    std::fs::write(live.join("server.pem"), "not a certificate").unwrap();
    server.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        verifies(&new.join("ca.pem")),
        "the working certificate was dropped"
    );
}
