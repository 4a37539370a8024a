//! The auth service's part of `cargo xtask bench` (also alone:
//! `cargo xtask bench-auth [--quick]`).
//!
//! Builds `auth-service` and `auth-bench` (release), makes sure PostgreSQL
//! is up (as `cargo xtask test` does), then runs `auth-bench` on SQLite and
//! on PostgreSQL: Login time at the configured argon2id cost, Refresh and
//! Validate throughput with 16 clients. See
//! `bench/src/bin/auth-bench.rs`.

use std::process::Command;

use anyhow::{Context, Result, bail};

pub fn run(args: &[&str]) -> Result<()> {
    let mut quick = false;
    for arg in args {
        match *arg {
            "--quick" => quick = true,
            other => bail!("bench-auth: unknown argument {other:?}; usage: bench-auth [--quick]"),
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(Command::new(&cargo).args([
        "build",
        "--release",
        "-p",
        "auth-service",
        "--bin",
        "auth-service",
        "-p",
        "keel-bench",
        "--bin",
        "auth-bench",
    ]))?;
    let postgres = crate::postgres::ensure()?;
    let target = crate::target_dir();
    let bench = target.join("release").join("auth-bench");
    let (duration, logins) = if quick { ("1s", "5") } else { ("5s", "20") };

    println!(
        "\nauth service: the real binary on a fresh store (embedded defaults: HS256, argon2id \
         cost as configured), {duration} per throughput run{}",
        if quick {
            " (--quick: figures not meaningful)"
        } else {
            ""
        }
    );
    for (i, backend) in ["sqlite", "postgres"].into_iter().enumerate() {
        let mut command = Command::new(&bench);
        command
            .args([
                "--backend",
                backend,
                "--duration",
                duration,
                "--logins",
                logins,
            ])
            .env(crate::postgres::URL_VAR, &postgres);
        if i == 0 {
            command.arg("--header");
        }
        let status = command
            .status()
            .with_context(|| format!("running {}", bench.display()))?;
        anyhow::ensure!(
            status.success(),
            "auth-bench --backend {backend} failed: {status}"
        );
    }
    Ok(())
}
