//! TLS on pgwire: psql connects with `sslmode=require` and with
//! `verify-full` against a CA made here; with `[tls] require = true` a
//! plaintext connection is refused (28000).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::Server;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA and a server certificate for localhost/127.0.0.1 signed by it.
pub fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=sluice test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

pub fn psql(server: &Server, host: &str, sslmode: &str, ca: &Path) -> std::process::Output {
    let conninfo = format!(
        "host={host} port={} user=sluice dbname=sluice sslmode={sslmode} sslrootcert={}",
        server.pg_addr.port(),
        ca.display()
    );
    Command::new("psql")
        .args(["-X", "-tA", "-d", &conninfo, "-c", "SELECT 'tls-ok'"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("psql is installed")
}

#[tokio::test]
async fn psql_connects_over_tls_and_plaintext_is_refused_when_required() {
    let tmp = tempfile::tempdir().unwrap();
    make_certificates(tmp.path());
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\nrequire = true\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let server = Server::spawn_with(&tmp.path().join("data"), Some(&config), &[]);
    let ca = tmp.path().join("ca.pem");
    for (host, mode) in [("127.0.0.1", "require"), ("localhost", "verify-full")] {
        let out = psql(&server, host, mode, &ca);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "tls-ok",
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let plain = psql(&server, "127.0.0.1", "disable", &ca);
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("requires TLS"), "{stderr}");
    // A client that checks the server's name refuses a certificate for
    // another one: verification is real.
    let wrong_ca = tmp.path().join("wrong");
    std::fs::create_dir_all(&wrong_ca).unwrap();
    make_certificates(&wrong_ca);
    let out = psql(
        &server,
        "localhost",
        "verify-full",
        &wrong_ca.join("ca.pem"),
    );
    assert!(
        !out.status.success(),
        "a certificate from another CA was accepted"
    );
}
