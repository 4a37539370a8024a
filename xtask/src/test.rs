//! `cargo xtask test`: the README's test command. Installs what the tests
//! need on a fresh machine (promtool, PostgreSQL, Redis, Chromium and the
//! Node package driving it), then runs every test of the workspace.

use std::process::Command;

use anyhow::Result;

pub fn run(args: &[&str]) -> Result<()> {
    // The metrics tests check the exposition with promtool.
    crate::ensure_tool("promtool", "prometheus")?;
    // The store tests run on PostgreSQL too, and fail (never skip) without it.
    let postgres = crate::postgres::ensure()?;
    // The shared rate-limit tests start Redis servers of their own.
    crate::ensure_tool("redis-server", "redis-server")?;
    // user-service's browser test drives Debian's Chromium with
    // playwright-core (the lock's version, from npm's cache when it has it).
    crate::ensure_tool("chromium", "chromium")?;
    crate::ensure_tool("npm", "npm")?;
    crate::run_cmd(Command::new("npm").args([
        "ci",
        "--prefix",
        "examples/user-service/tests/browser",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
    ]))?;
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(args)
        .env(crate::postgres::URL_VAR, postgres);
    crate::run_cmd(&mut cargo)
}
