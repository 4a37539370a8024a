//! `cargo xtask rust-version`: the workspace's declared `rust-version` is
//! true of what `Cargo.lock` builds.
//!
//! A user on the declared toolchain builds our code and every locked
//! dependency. Our own code is checked by clippy's `incompatible_msrv` lint
//! (std items newer than the declared version), which CI's clippy run
//! includes; this checks the other half: no locked dependency declares a
//! newer `rust-version` than ours. CI cannot install a second toolchain
//! (no network but the package registries), so this is what it can check.

use anyhow::{Context, Result, bail, ensure};

pub fn run(args: &[&str]) -> Result<()> {
    ensure!(args.is_empty(), "usage: cargo xtask rust-version");
    let metadata = crate::cargo_metadata(&[])?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    let is_member =
        |p: &serde_json::Value| p["id"].as_str().is_some_and(|id| members.contains(&id));
    let declared = packages
        .iter()
        .filter(|p| is_member(p))
        .filter_map(|p| p["rust_version"].as_str())
        .map(Version::parse)
        .collect::<Option<Vec<_>>>()
        .context("a member's rust-version does not parse")?;
    let Some(ours) = declared.iter().min().copied() else {
        bail!("no workspace member declares a rust-version");
    };
    let mut newer: Vec<String> = packages
        .iter()
        .filter(|p| !is_member(p))
        .filter_map(|p| {
            let wanted = Version::parse(p["rust_version"].as_str()?)?;
            (wanted > ours).then(|| {
                format!(
                    "{} {} needs rustc {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["rust_version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    newer.sort();
    ensure!(
        newer.is_empty(),
        "Cargo.lock has dependencies newer than the declared rust-version {ours}:\n  {}",
        newer.join("\n  ")
    );
    println!(
        "rust-version {ours}: none of the {} locked packages declares a newer one",
        packages.len()
    );
    Ok(())
}

/// A `rust-version`: major.minor, with an optional patch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u64, u64, u64);

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(str::parse::<u64>);
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)?;
        if self.2 != 0 {
            write!(f, ".{}", self.2)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_compare_as_rustc_releases() {
        assert!(Version::parse("1.94").unwrap() < Version::parse("1.95").unwrap());
        assert!(Version::parse("1.94").unwrap() < Version::parse("1.94.1").unwrap());
        assert!(Version::parse("1.100").unwrap() > Version::parse("1.94.0").unwrap());
        assert_eq!(Version::parse("1.94").unwrap().to_string(), "1.94");
        assert!(Version::parse("one").is_none());
    }
}
