//! Project automation for Keel, run as `cargo xtask <command>`:
//!
//! - `run [--replicas N]` builds the example services and runs them together
//!   (the README's main job); with `--replicas`, N user-service replicas
//!   behind a DNS name served by xtask, which the gateway balances over.
//! - `gen` regenerates the examples' checked-in code from their protos, and
//!   `POLICY.md`; `gen --check` fails when either is stale.
//! - `policy [--format json]` prints every method's resolved rules.
//! - `test` installs what the tests need on a fresh machine, then runs them.
//! - `bench` measures plain tonic against the Keel service as README builds it
//!   (callgrind instructions, h2load rounds, peak RSS) and runs the criterion benches.
//! - `new <dir>` creates a standalone service crate at `dir` that depends on
//!   Keel by path (annotated proto, build.rs, handler, test, Dockerfile).
//! - `package` packages each published crate on its own, as the registry
//!   would check it, and checks that the registry's crates of those names
//!   are ours (or that the names are free).
//! - `rust-version` checks that no locked dependency needs a newer rustc
//!   than the workspace's declared `rust-version`.
//! - `bench-auth` runs only the auth service's benchmark (Login, Refresh,
//!   Validate on SQLite and PostgreSQL), which `bench` includes.

mod bench;
mod bench_auth;
mod codegen;
mod new;
mod package;
mod policy;
mod postgres;
mod reference;
mod run;
mod rust_version;
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
        ["bench-auth", rest @ ..] => bench_auth::run(rest),
        ["policy", rest @ ..] => policy::run(rest),
        ["run", rest @ ..] => run::run(rest),
        ["new", rest @ ..] => new::run(rest),
        ["package", rest @ ..] => package::run(rest),
        ["rust-version", rest @ ..] => rust_version::run(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask run [--replicas N] | new <dir> | gen [--check] | test [-- <cargo test args>] | bench [--quick] [--instructions] | bench-auth [--quick] | policy [--format json] | package [--no-registry-check] | rust-version"
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

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root) or `target/`.
fn target_dir() -> std::path::PathBuf {
    let root = root();
    match std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
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

/// The workspace's `cargo metadata` (with `extra` arguments, e.g. `--no-deps`), as JSON.
fn cargo_metadata(extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(extra)
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(output.status.success(), "cargo metadata failed");
    serde_json::from_slice(&output.stdout).context("reading cargo metadata")
}

/// Makes sure `binary` is on PATH, installing Debian's `package` when it is
/// missing and we are root (as on CI and the project's machines).
pub fn ensure_tool(binary: &str, package: &str) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let found = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found(binary) {
        return Ok(());
    }
    anyhow::ensure!(
        found("apt-get"),
        "{binary} is missing and apt-get is not available: install the {package} package"
    );
    eprintln!("xtask: {binary} is missing; installing Debian package {package}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        run_cmd(Command::new("apt-get").arg("update"))?;
        anyhow::ensure!(install(), "apt-get install {package} failed");
    }
    anyhow::ensure!(
        found(binary),
        "{package} installed but {binary} is still not on PATH"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// ARCHITECTURE.md's code map names every module of the two library
    /// crates, and only modules that exist.
    #[test]
    fn the_code_map_matches_the_tree() {
        let root = crate::root();
        let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
        let map = &map[map.find("## Code map").expect("a code map")..];
        let map = &map[..map.find("### Invariants").expect("its invariants")];
        for krate in ["codegen/src", "runtime/src"] {
            let section = &map[map.find(&format!("### `{krate}/`")).expect(krate)..];
            let section = &section[..section[4..].find("### ").map_or(section.len(), |i| i + 4)];
            let mut modules: Vec<String> = std::fs::read_dir(root.join(krate))
                .unwrap()
                .map(|e| e.unwrap())
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        format!("{name}/")
                    } else {
                        name
                    }
                })
                .filter(|n| n.ends_with('/') || n.ends_with(".rs"))
                .filter(|n| !n.ends_with(".md"))
                .collect();
            modules.sort();
            for module in &modules {
                assert!(
                    section.contains(&format!("| `{module}`"))
                        || section.contains(&format!(", `{module}`")),
                    "{krate}/{module} is not in ARCHITECTURE.md's code map"
                );
            }
            for line in section.lines().filter(|l| l.starts_with("| `")) {
                let names = line[2..].split(" |").next().unwrap();
                for name in names.split(", ") {
                    let name = name.trim_matches('`');
                    assert!(
                        root.join(krate).join(name).exists(),
                        "the code map names {krate}/{name}, which does not exist"
                    );
                }
            }
        }
    }
}
