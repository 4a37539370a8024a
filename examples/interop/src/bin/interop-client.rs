//! `interop-client`: runs gRPC interop cases against a server. Flags follow
//! the gRPC interop client conventions. Exits 0 when every case passed.

use std::process::ExitCode;

use clap::Parser;
use interop::client::{Client, DEFAULT_PORT, TestCase, parse_test_cases};

/// Runs gRPC interop test cases against an interop server and prints
/// PASS/FAIL per case; exits non-zero if any failed.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Server host name or IP address.
    #[arg(long = "server_host", default_value = "localhost")]
    server_host: String,
    /// Server port.
    #[arg(long = "server_port", default_value_t = DEFAULT_PORT)]
    server_port: u16,
    /// `all`, or a test case name (several: comma-separated).
    #[arg(
        long = "test_case",
        value_name = "NAME",
        default_value = "all",
        value_parser = |s: &str| parse_test_cases(s).map(Cases),
    )]
    test_case: Cases,
    /// Whether to connect with TLS (the server's certificate checked
    /// against `--ca_file`, else the system's trust store).
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
    /// PEM CAs the server's certificate must chain to, with `--use_tls`.
    #[arg(long = "ca_file", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (and SNI), with
    /// `--use_tls`, instead of `--server_host`.
    #[arg(long = "server_host_override", value_name = "NAME")]
    server_host_override: Option<String>,
}

/// The cases named by `--test_case`.
#[derive(Clone, Debug)]
struct Cases(Vec<TestCase>);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let tls = match tls(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("interop-client: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::connect_with(&args.server_host, args.server_port, tls).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("interop-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = Vec::new();
    for case in args.test_case.0 {
        match client.run(case).await {
            Ok(()) => println!("PASS {case}"),
            Err(e) => {
                println!("FAIL {case}: {e}");
                failed.push(case.name());
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "interop-client: {} failed: {}",
            failed.len(),
            failed.join(", ")
        );
        ExitCode::FAILURE
    }
}

/// The TLS of `--use_tls`, `--ca_file` and `--server_host_override`.
fn tls(args: &Args) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    if !args.use_tls {
        if args.ca_file.is_some() || args.server_host_override.is_some() {
            return Err("--ca_file and --server_host_override need --use_tls".to_owned());
        }
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match &args.ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("--ca_file {}: {e}", path.display()))?;
            tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let Some(name) = &args.server_host_override {
        tls = tls.domain_name(name);
    }
    Ok(Some(tls))
}
