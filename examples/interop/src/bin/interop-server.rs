//! `interop-server`: serves `grpc.testing.TestService` through Keel until
//! Ctrl-C or SIGTERM. Flags follow the gRPC interop server conventions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use interop::server::{DEFAULT_PORT, InteropServer, bind};

/// Serves the gRPC interop `grpc.testing.TestService` through Keel's
/// generated, wrapped server (plaintext HTTP/2).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Whether to serve TLS. Only `false` is supported.
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.use_tls {
        eprintln!(
            "interop-server: TLS is not supported; run with --use_tls=false (the default) \
             and put a TLS-terminating proxy in front if you need it"
        );
        return ExitCode::from(2);
    }
    let addr = SocketAddr::new(args.host, args.port);
    match run(addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: SocketAddr) -> Result<(), interop::server::ServerError> {
    let server = InteropServer::new(addr)?;
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
