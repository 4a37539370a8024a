//! `cargo xtask test`: the README's test command. Installs what the tests
//! need on a fresh machine, then runs every test of the workspace.

use std::process::Command;

use anyhow::Result;

pub fn run(args: &[&str]) -> Result<()> {
    // The metrics tests check the exposition with promtool.
    crate::ensure_tool("promtool", "prometheus")?;
    // The store tests run on PostgreSQL too, and fail (never skip) without it.
    let postgres = crate::postgres::ensure()?;
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(args)
        .env(crate::postgres::URL_VAR, postgres);
    crate::run_cmd(&mut cargo)
}
