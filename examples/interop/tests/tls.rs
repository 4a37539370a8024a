//! The interop binaries over TLS, as other implementations drive them:
//! `interop-server --use_tls --tls_cert_file --tls_key_file` and
//! `interop-client --use_tls --ca_file --server_host_override`, on
//! certificates made here.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The name grpc-go's interop tests give their server certificate.
const OVERRIDE: &str = "foo.test.google.fr";

#[test]
fn every_case_passes_over_tls_between_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![OVERRIDE.to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    let mut server = Command::new(env!("CARGO_BIN_EXE_interop-server"))
        .args(["--port", "0", "--use_tls=true", "--tls_cert_file"])
        .arg(path("server.pem"))
        .arg("--tls_key_file")
        .arg(path("server.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start interop-server");
    let stdout = server.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let line = lines.next().expect("output").expect("utf-8");
        if let Some(addr) = line.strip_prefix("interop-server listening on ") {
            break addr.rsplit(':').next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no listening line");
    };

    let run_client = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_interop-client"))
            .args(["--server_host", "127.0.0.1", "--server_port", &port])
            .args(extra)
            .output()
            .expect("run interop-client")
    };
    let ca_file = path("ca.pem").display().to_string();
    let tls = [
        "--use_tls=true",
        "--ca_file",
        &ca_file,
        "--server_host_override",
        OVERRIDE,
    ];
    let output = run_client(&[&tls[..], &["--test_case=all"]].concat());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        14,
        "{stdout}"
    );

    // Without the override the certificate's name does not match; without
    // TLS the server is not understood.
    let output = run_client(&[
        "--use_tls=true",
        "--ca_file",
        &ca_file,
        "--test_case=empty_unary",
    ]);
    assert!(!output.status.success());
    let output = run_client(&["--test_case=empty_unary"]);
    assert!(!output.status.success());

    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "interop-server exits cleanly on SIGTERM: {status}"
    );
}
