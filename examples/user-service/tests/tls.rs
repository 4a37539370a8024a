//! TLS and mTLS on the gRPC port, with certificates made here (rcgen), through
//! the generated client over real sockets on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use keel_rpc::config::{ClientAuth, Config, ServerTlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tonic::Code;
use user_service::user_v1::{CountUsersRequest, CreateUserRequest};

/// A CA that issues certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate whose only SAN is the URI `uri` (a SPIFFE ID).
    fn issue_uri(&self, uri: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// Writes `contents` to `dir/name` the way Kubernetes updates a Secret
/// volume: a new file renamed over the old one.
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let staged = dir.join(format!(".{name}.new"));
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    path
}

/// The example's configuration serving TLS with a certificate of `ca` for
/// 127.0.0.1, its files in `dir`.
fn tls_config(dir: &Path, ca: &Ca) -> Config {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let mut config = config();
    config.server.tls = Some(ServerTlsConfig {
        cert_file: write(dir, "tls.crt", &cert),
        key_file: write(dir, "tls.key", &key),
        client_ca_file: None,
        client_auth: None,
    });
    config
}

/// A Keel client runtime trusting `ca`, with a client certificate when given.
fn client(
    dir: &Path,
    name: &str,
    ca: &Ca,
    identity: Option<(String, String)>,
) -> keel_rpc::client::Client {
    let mut config = config();
    config.client.tls.ca_file = Some(write(dir, &format!("{name}-ca.crt"), &ca.pem()));
    if let Some((cert, key)) = identity {
        config.client.tls.cert_file = Some(write(dir, &format!("{name}.crt"), &cert));
        config.client.tls.key_file = Some(write(dir, &format!("{name}.key"), &key));
    }
    let metrics = keel_rpc::Metrics::new(&[]).unwrap();
    keel_rpc::client::Client::new(&config, metrics.registry()).expect("client runtime")
}

/// HealthCheck (a public method) over `https://127.0.0.1:port` with `client`.
async fn health(server: &Server, client: &keel_rpc::client::Client) -> Result<(), tonic::Status> {
    let url = format!("https://127.0.0.1:{}", server.grpc.port());
    let mut users = user_service::user_v1::connect_user_service(url, client).unwrap();
    users.health_check(()).await.map(drop)
}

#[tokio::test]
async fn a_tls_call_succeeds_and_a_plaintext_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = Server::start(tls_config(dir.path(), &ca)).await;

    health(&server, &client(dir.path(), "c", &ca, None))
        .await
        .expect("TLS call");

    // Plaintext HTTP/2 to the TLS port: no answer a gRPC client can read.
    let status = server.client().await.health_check(()).await;
    assert!(status.is_err(), "a plaintext call succeeded: {status:?}");

    // A client that does not trust the server's CA refuses it.
    let other = Ca::new("another CA");
    let status = health(&server, &client(dir.path(), "o", &other, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_of_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("stranger CA");
    let mut config = tls_config(dir.path(), &ca);
    let tls = config.server.tls.as_mut().unwrap();
    tls.client_ca_file = Some(write(dir.path(), "clients-ca.crt", &clients.pem()));
    let server = Server::start(config).await;

    let gateway = clients.issue(&["gateway.example.org"]);
    health(&server, &client(dir.path(), "gw", &ca, Some(gateway)))
        .await
        .expect("a client certificate of the client CA");

    // TLS 1.3 clients learn of the refusal from the server's alert, on their
    // first read.
    for (name, identity, alert) in [
        ("none", None, "CertificateRequired"),
        (
            "stranger",
            Some(stranger.issue(&["gateway.example.org"])),
            "UnknownCA",
        ),
    ] {
        let status = health(&server, &client(dir.path(), name, &ca, identity))
            .await
            .unwrap_err();
        let shown = format!("{status:?}");
        assert!(
            shown.contains(&format!("fatal alert: {alert}")),
            "{name}: {shown}"
        );
    }
    server.stop().await;

    // `client_auth = "optional"`: no certificate is fine, a stranger's is not.
    let mut config = tls_config(dir.path(), &ca);
    let tls = config.server.tls.as_mut().unwrap();
    tls.client_ca_file = Some(write(dir.path(), "clients-ca.crt", &clients.pem()));
    tls.client_auth = Some(ClientAuth::Optional);
    let server = Server::start(config).await;
    health(&server, &client(dir.path(), "none", &ca, None))
        .await
        .expect("optional: no certificate");
    let identity = Some(stranger.issue(&["x"]));
    let status = health(&server, &client(dir.path(), "s2", &ca, identity))
        .await
        .unwrap_err();
    assert!(
        format!("{status:?}").contains("fatal alert: UnknownCA"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_open_streams_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let server = Server::start(tls_config(dir.path(), &old_ca)).await;
    let trusts_old = client(dir.path(), "old", &old_ca, None);
    let trusts_new = client(dir.path(), "new", &new_ca, None);
    health(&server, &trusts_old)
        .await
        .expect("the first certificate");
    assert!(health(&server, &trusts_new).await.is_err());

    // A client stream opened before the rotation, one message sent.
    let url = format!("https://127.0.0.1:{}", server.grpc.port());
    let mut users = user_service::user_v1::connect_user_service(url, &trusts_old).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let user = |n: u32| CreateUserRequest {
        name: format!("User {n}"),
        email: format!("user{n}@example.com"),
    };
    tx.send(user(1)).await.unwrap();
    let token = sign_hs(
        jsonwebtoken::Algorithm::HS256,
        &claims("users:read users:write"),
    );
    let import = tokio::spawn(async move {
        users
            .import_users(with_token(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                &token,
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // cert-manager replaces both files.
    let (cert, key) = new_ca.issue(&["127.0.0.1"]);
    write(dir.path(), "tls.key", &key);
    write(dir.path(), "tls.crt", &cert);

    health(&server, &trusts_new)
        .await
        .expect("new connections get the new certificate");
    let status = health(&server, &trusts_old).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The stream opened on the old certificate goes on and completes.
    tx.send(user(2)).await.unwrap();
    drop(tx);
    let imported = tokio::time::timeout(Duration::from_secs(10), import)
        .await
        .expect("the import finishes")
        .unwrap()
        .expect("the open stream was not cut");
    assert_eq!(imported.get_ref().users.len(), 2, "{imported:?}");

    // A half-written rotation (a key that is not the certificate's) keeps
    // the certificate in use.
    let (_, wrong_key) = new_ca.issue(&["127.0.0.1"]);
    write(dir.path(), "tls.key", &wrong_key);
    health(&server, &trusts_new)
        .await
        .expect("the previous certificate still serves");
    server.stop().await;
}

#[test]
fn certificate_files_that_do_not_load_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let mut config = tls_config(dir.path(), &ca);
    let tls = config.server.tls.as_mut().unwrap();
    tls.key_file = write(dir.path(), "tls.key", "not a key");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(async {
        let keel = keel_rpc::Keel::new(&config, user_service::SERVICES).unwrap();
        let users = user_service::Users::in_memory().await.unwrap();
        let server = user_service::server(&keel, &config, users).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listeners = keel_rpc::serve::Listeners {
            grpc: listener,
            metrics: None,
        };
        server
            .serve_on(listeners, tokio_stream::pending())
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(error.starts_with("server.tls.key_file: "), "{error}");
    assert!(error.contains("tls.key"), "{error}");

    // A missing file is a configuration error, with the others.
    let problems = keel_rpc::config::Loader::new()
        .env_from([
            (
                "KEEL_AUTH__HMAC_SECRET",
                "a-secret-of-this-test-0123456789abcdef",
            ),
            ("KEEL_SERVER__TLS__CERT_FILE", "/nonexistent/tls.crt"),
            ("KEEL_SERVER__TLS__KEY_FILE", "/nonexistent/tls.key"),
            ("KEEL_CLIENT__TLS__CERT_FILE", "/nonexistent/client.crt"),
        ])
        .load()
        .unwrap_err()
        .problems()
        .to_vec();
    for start in [
        "server.tls.cert_file: /nonexistent/tls.crt does not exist",
        "server.tls.key_file: /nonexistent/tls.key does not exist",
        "client.tls.cert_file: /nonexistent/client.crt does not exist",
        "client.tls.key_file: missing; client.tls.cert_file needs its private key",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(start)),
            "{start}: {problems:#?}"
        );
    }
}

const GATEWAY: &str = "spiffe://keel.example/ns/default/sa/gateway-service";

#[tokio::test]
async fn an_internal_method_admits_the_gateway_s_certificate_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let workloads = Ca::new("workload CA");
    let mut config = tls_config(dir.path(), &ca);
    let tls = config.server.tls.as_mut().unwrap();
    tls.client_ca_file = Some(write(dir.path(), "workloads.crt", &workloads.pem()));
    // Optional, so that callers without a certificate reach the method's rule.
    tls.client_auth = Some(ClientAuth::Optional);
    let server = Server::start(config).await;
    let count = |client: keel_rpc::client::Client, token: Option<String>| {
        let url = format!("https://127.0.0.1:{}", server.grpc.port());
        async move {
            let mut users = user_service::user_v1::connect_user_service(url, &client).unwrap();
            let request = match token {
                Some(token) => with_token(CountUsersRequest {}, &token),
                None => tonic::Request::new(CountUsersRequest {}),
            };
            users
                .count_users(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };

    let gateway = client(dir.path(), "gw", &ca, Some(workloads.issue_uri(GATEWAY)));
    let reply = count(gateway, None).await.expect("the gateway may count");
    assert_eq!(
        (reply.count, reply.peer.as_str()),
        (0, GATEWAY),
        "the handler reads the peer"
    );

    let other = workloads.issue_uri("spiffe://keel.example/ns/default/sa/other");
    let status = count(client(dir.path(), "other", &ca, Some(other)), None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "peer spiffe://keel.example/ns/default/sa/other is not allowed"
    );

    // No certificate: a valid token does not stand in for one.
    let token = sign_hs(
        jsonwebtoken::Algorithm::HS256,
        &claims("users:read users:write"),
    );
    for token in [None, Some(token)] {
        let status = count(client(dir.path(), "anon", &ca, None), token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.message(), "no verified client certificate");
    }
    server.stop().await;

    // Without TLS there is no peer at all.
    let plain = Server::start(common::config()).await;
    let status = plain
        .client()
        .await
        .count_users(CountUsersRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    plain.stop().await;
}

#[tokio::test]
async fn metrics_tls_serves_the_http_port_over_https_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let mut config = common::config();
    config.metrics.tls = Some(ServerTlsConfig {
        cert_file: write(dir.path(), "metrics.crt", &cert),
        key_file: write(dir.path(), "metrics.key", &key),
        client_ca_file: None,
        client_auth: None,
    });
    let server = Server::start(config).await;
    let get = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let tls = ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(server.metrics)
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    stream.write_all(get).await.unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify after `Connection: close`.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("grpc_server_handled_total"), "{response}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(server.metrics)
        .await
        .unwrap();
    plain.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_probe_speaks_tls_and_wants_the_service_s_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let mut config = tls_config(dir.path(), &ca);
    let server = Server::start(config.clone()).await;
    config.server.addr = server.grpc;
    keel_rpc::serve::probe_local(&config, "")
        .await
        .expect("the probe over TLS");
    keel_rpc::serve::probe_local(&config, "user.v1.UserService")
        .await
        .expect("the service's own status");

    // Another certificate, even of the same CA, is not this service's.
    let (cert, _) = ca.issue(&["127.0.0.1"]);
    let tls = config.server.tls.as_mut().unwrap();
    tls.cert_file = write(dir.path(), "other.crt", &cert);
    let error = keel_rpc::serve::probe_local(&config, "").await.unwrap_err();
    assert!(
        error.to_string().starts_with("health probe of 127.0.0.1:"),
        "{error}"
    );
    server.stop().await;
}
