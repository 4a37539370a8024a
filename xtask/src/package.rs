//! `cargo xtask package`: packages each published crate on its own, as the
//! registry would check it, and makes sure each of their names is ours.
//!
//! A multi-crate `cargo publish --dry-run -p a -p b -p c` once passed while
//! `cargo package -p keel` alone resolved our macro crate's name to another
//! project's crate: packaged together, cargo lets the crates see each other;
//! the registry sees one at a time. So here:
//!
//! 1. The published crates (workspace members without `publish = false`) are
//!    put in dependency order.
//! 2. Each name is looked up in the registry from outside the workspace
//!    (inside it, `cargo info` shows the local package). A name the registry
//!    does not know is free; one it knows must be ours (its page names our
//!    `repository`), else someone else's crate is what `cargo add` gives.
//! 3. Each crate is packaged and its tarball built by `cargo package -p`,
//!    with the crates before it made available exactly as published ones
//!    would be: a `[patch.crates-io]` entry (given with `--config`) pointing
//!    at their packaged sources, never at the workspace.
//! 4. The packaged crate's `Cargo.lock` must resolve each of our names to
//!    that packaged source, never to a registry crate.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// One published crate of the workspace.
struct Crate {
    name: String,
    version: String,
    repository: Option<String>,
    /// The names of the other published crates it depends on.
    depends_on: Vec<String>,
}

pub fn run(args: &[&str]) -> Result<()> {
    let offline = match args {
        [] => false,
        ["--no-registry-check"] => true,
        _ => bail!("usage: cargo xtask package [--no-registry-check]"),
    };
    let crates = in_dependency_order(published_crates()?)?;
    let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
    println!(
        "published crates, in dependency order: {}",
        names.join(", ")
    );
    if offline {
        println!("registry ownership check skipped (--no-registry-check)");
    } else {
        for krate in &crates {
            check_name_is_ours(krate)?;
        }
    }
    let cargo = env!("CARGO");
    let packaged_dir = crate::target_dir().join("package");
    // The patches are unused by the workspace itself (it depends on our
    // crates by path), and cargo records unused patches in the workspace's
    // lock: so no `--locked` here, and the lock is put back after each run
    // (the rest of CI builds with `--locked`).
    let lock_path = crate::root().join("Cargo.lock");
    let lock = std::fs::read(&lock_path).context("reading Cargo.lock")?;
    for krate in &crates {
        let mut command = Command::new(cargo);
        command.args(["package", "-p", &krate.name]);
        for dep in dependencies_of(krate, &crates) {
            let source = packaged_dir.join(format!("{}-{}", dep.name, dep.version));
            command.arg("--config").arg(format!(
                "patch.crates-io.{}.path={:?}",
                dep.name,
                source.display().to_string()
            ));
        }
        println!("== cargo package -p {} (alone)", krate.name);
        let packaged = crate::run_cmd(&mut command);
        std::fs::write(&lock_path, &lock).context("restoring Cargo.lock")?;
        packaged?;
        let source = packaged_dir.join(format!("{}-{}", krate.name, krate.version));
        check_lock_resolves_ours(&source, &names)?;
    }
    println!("every crate packages on its own, and resolves its siblings to ours");
    Ok(())
}

/// The workspace members that may be published, from `cargo metadata`.
fn published_crates() -> Result<Vec<Crate>> {
    let metadata = crate::cargo_metadata(&["--no-deps"])?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    // `publish` is null when any registry may take the crate, `[]` for
    // `publish = false`.
    let published: HashSet<&str> = packages
        .iter()
        .filter(|p| p["publish"].is_null())
        .filter_map(|p| p["name"].as_str())
        .collect();
    let crates = packages
        .iter()
        .filter(|p| p["publish"].is_null())
        .map(|p| Crate {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            version: p["version"].as_str().unwrap_or_default().to_owned(),
            repository: p["repository"].as_str().map(str::to_owned),
            depends_on: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                // Dev-dependencies are not part of what is published.
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| published.contains(d))
                .map(str::to_owned)
                .collect(),
        })
        .collect();
    Ok(crates)
}

/// Orders crates so that each comes after the published crates it depends on.
fn in_dependency_order(crates: Vec<Crate>) -> Result<Vec<Crate>> {
    let mut left: HashMap<String, Crate> =
        crates.into_iter().map(|c| (c.name.clone(), c)).collect();
    let mut done: Vec<Crate> = Vec::new();
    while !left.is_empty() {
        let mut ready: Vec<String> = left
            .values()
            .filter(|c| {
                c.depends_on
                    .iter()
                    .all(|d| done.iter().any(|p| &p.name == d))
            })
            .map(|c| c.name.clone())
            .collect();
        ensure!(
            !ready.is_empty(),
            "the published crates depend on each other in a cycle"
        );
        ready.sort();
        for name in ready {
            done.extend(left.remove(&name));
        }
    }
    Ok(done)
}

/// The published crates `krate` needs, directly or through another of ours.
fn dependencies_of<'a>(krate: &Crate, crates: &'a [Crate]) -> Vec<&'a Crate> {
    let mut needed: Vec<&Crate> = Vec::new();
    let mut queue: Vec<&str> = krate.depends_on.iter().map(String::as_str).collect();
    while let Some(name) = queue.pop() {
        if let Some(dep) = crates.iter().find(|c| c.name == name)
            && !needed.iter().any(|n| n.name == name)
        {
            needed.push(dep);
            queue.extend(dep.depends_on.iter().map(String::as_str));
        }
    }
    needed
}

/// Fails when the registry has a crate of this name that is not ours.
fn check_name_is_ours(krate: &Crate) -> Result<()> {
    // Outside the workspace, so that cargo asks the registry.
    let outside = std::env::temp_dir();
    let output = Command::new(env!("CARGO"))
        .args(["info", &krate.name, "--registry", "crates-io"])
        .current_dir(&outside)
        .output()
        .with_context(|| format!("running cargo info {}", krate.name))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        ensure!(
            text.contains("could not find"),
            "cargo info {} failed without saying the name is free:\n{text}",
            krate.name
        );
        println!("{}: not in the registry (free)", krate.name);
        return Ok(());
    }
    match &krate.repository {
        Some(repository) if text.contains(repository.as_str()) => {
            println!("{}: in the registry, ours ({repository})", krate.name);
            Ok(())
        }
        _ => bail!(
            "the registry's `{}` is another project's crate: `cargo add {}` would not give ours; \
             rename the package\n{text}",
            krate.name,
            krate.name
        ),
    }
}

/// Fails when the packaged crate's lock file takes one of our crates from a
/// registry instead of its packaged source.
fn check_lock_resolves_ours(source: &Path, ours: &[&str]) -> Result<()> {
    let lock_path: PathBuf = source.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let lock: toml::Value =
        toml::from_str(&lock).with_context(|| format!("parsing {}", lock_path.display()))?;
    for package in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let name = package.get("name").and_then(|n| n.as_str()).unwrap_or("");
        if ours.contains(&name)
            && let Some(registry) = package.get("source").and_then(|s| s.as_str())
        {
            bail!(
                "{}: `{name}` resolves to {registry}, not to our packaged crate",
                lock_path.display()
            );
        }
    }
    Ok(())
}
