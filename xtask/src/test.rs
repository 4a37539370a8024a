//! `cargo xtask test`: the README's test command. Installs what the tests
//! need on a fresh machine, then runs every test of the workspace.

use std::process::Command;

use anyhow::Result;

pub fn run(args: &[&str]) -> Result<()> {
    // The metrics tests check the exposition with promtool.
    crate::ensure_tool("promtool", "prometheus")?;
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["test", "--workspace", "--locked"]).args(args);
    crate::run_cmd(&mut cargo)
}
