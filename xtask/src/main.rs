//! Project automation for Keel, run as `cargo xtask <command>`:
//!
//! - `gen` regenerates the examples' checked-in code from their protos;
//!   `gen --check` fails when the checked-in code is stale.
//! - `test` installs what the tests need on a fresh machine, then runs them.
//! - `bench` runs the throughput benchmark (h2load) and the criterion benches.

mod bench;
mod codegen;
mod test;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["gen"] => codegen::run(false),
        ["gen", "--check"] => codegen::run(true),
        ["test", rest @ ..] => test::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask gen [--check] | test [-- <cargo test args>] | bench [--quick]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Runs a command in the workspace root, failing on a non-zero exit.
fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| anyhow::anyhow!("running {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}
