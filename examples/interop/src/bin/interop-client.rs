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
    /// Whether to connect with TLS. Only `false` is supported.
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

/// The cases named by `--test_case`.
#[derive(Clone, Debug)]
struct Cases(Vec<TestCase>);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.use_tls {
        eprintln!("interop-client: TLS is not supported; run with --use_tls=false (the default)");
        return ExitCode::from(2);
    }
    let client = match Client::connect(&args.server_host, args.server_port).await {
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
