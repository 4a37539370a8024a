//! The configuration reference, generated from the declarations of Keel's
//! sections (`keel_rpc::config::Config::reference`) into the crate docs and the
//! README.

use std::path::Path;

use anyhow::{Context, Result};

/// The crate docs' copy, included by `runtime/src/config/mod.rs`.
const DOCS: &str = "runtime/src/config/reference.md";

/// The README's copy, between these lines.
const README: &str = "README.md";
const BEGIN: &str = "<!-- config-reference:begin -->\n";
const END: &str = "<!-- config-reference:end -->";

/// Each file holding the reference, with the text it should have.
pub fn outputs(root: &Path) -> Result<Vec<(&'static str, String)>> {
    let table = keel_rpc::config::Config::<()>::reference();
    let readme = std::fs::read_to_string(root.join(README)).context("reading README.md")?;
    let start = readme
        .find(BEGIN)
        .context("README.md has no config-reference:begin line")?
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .context("README.md has no config-reference:end line")?
        + start;
    let readme = format!("{}{table}{}", &readme[..start], &readme[end..]);
    Ok(vec![(DOCS, table), (README, readme)])
}
