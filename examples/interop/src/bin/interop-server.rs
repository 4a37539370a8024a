//! `interop-server`: serves `grpc.testing.TestService` through Keel until
//! Ctrl-C or SIGTERM. Flags follow the gRPC interop server conventions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use interop::server::{DEFAULT_PORT, InteropServer, bind};

/// Serves the gRPC interop `grpc.testing.TestService` through Keel's
/// generated, wrapped server (plaintext HTTP/2, or TLS with `--use_tls`).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Whether to serve TLS, with `--tls_cert_file` and `--tls_key_file`.
    #[arg(
        long = "use_tls",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        action = clap::ArgAction::Set,
        default_missing_value = "true",
        value_parser = interop::parse_bool_flag,
    )]
    use_tls: bool,
    /// PEM certificate chain served with `--use_tls`.
    #[arg(long = "tls_cert_file", value_name = "FILE")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `--tls_cert_file`.
    #[arg(long = "tls_key_file", value_name = "FILE")]
    tls_key_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let tls = match (args.use_tls, args.tls_cert_file, args.tls_key_file) {
        (false, None, None) => None,
        (true, Some(cert_file), Some(key_file)) => Some(keel_rpc::config::ServerTlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
            client_auth: None,
        }),
        (true, _, _) => {
            eprintln!("interop-server: --use_tls needs --tls_cert_file and --tls_key_file");
            return ExitCode::from(2);
        }
        (false, _, _) => {
            eprintln!("interop-server: --tls_cert_file and --tls_key_file need --use_tls");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::new(args.host, args.port);
    match run(addr, tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    addr: SocketAddr,
    tls: Option<keel_rpc::config::ServerTlsConfig>,
) -> Result<(), interop::server::ServerError> {
    let server = InteropServer::with_tls(addr, tls)?;
    let listener = bind(addr).await?;
    if let Ok(local) = listener.local_addr() {
        println!("interop-server listening on {local}");
    }
    server.serve(listener, shutdown_signal()).await
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
