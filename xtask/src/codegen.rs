//! `cargo xtask gen [--check]`: the examples' generated code, checked in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One crate whose generated code lives in the repository.
struct Target {
    protos: &'static [&'static str],
    includes: &'static [&'static str],
    out_dir: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        protos: &["examples/user-service/proto/user/v1/user.proto"],
        includes: &["examples/user-service/proto"],
        out_dir: "examples/user-service/src/gen",
    },
    Target {
        protos: &["examples/interop/proto/grpc/testing/test.proto"],
        includes: &["examples/interop/proto"],
        out_dir: "examples/interop/src/gen",
    },
    Target {
        protos: &["examples/gateway-service/proto/gateway/v1/gateway.proto"],
        includes: &["examples/gateway-service/proto"],
        out_dir: "examples/gateway-service/src/gen",
    },
    Target {
        protos: &["tests/validation/proto/rules/v1/rules.proto"],
        includes: &["tests/validation/proto"],
        out_dir: "tests/validation/src/gen",
    },
    Target {
        protos: &["tests/rest/proto/ticks/v1/ticks.proto"],
        includes: &["tests/rest/proto"],
        out_dir: "tests/rest/src/gen",
    },
    Target {
        protos: &["proto/keel/v1/auth.proto"],
        includes: &["proto"],
        out_dir: "examples/auth-service/src/gen",
    },
];

/// Runs the builder for `target` into a fresh scratch directory.
fn generate(root: &Path, target: &Target) -> Result<(PathBuf, keel_rpc_codegen::Generated)> {
    let scratch = tempfile_dir()?;
    let protos: Vec<PathBuf> = target.protos.iter().map(|p| root.join(p)).collect();
    let includes: Vec<PathBuf> = target.includes.iter().map(|p| root.join(p)).collect();
    let generated = keel_rpc_codegen::configure()
        .out_dir(&scratch)
        .emit_rerun_if_changed(false)
        .header("Regenerate with `cargo xtask gen`.")
        .compile(&protos, &includes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((scratch, generated))
}

/// The resolved policies of every target's services, with the proto each comes from.
pub fn policies() -> Result<Vec<(&'static str, Vec<keel_rpc_codegen::ServiceSpec>)>> {
    let root = crate::root();
    let mut all = Vec::new();
    for target in TARGETS {
        let (scratch, generated) = generate(&root, target)?;
        std::fs::remove_dir_all(&scratch)?;
        all.push((target.protos[0], generated.policies));
    }
    Ok(all)
}

pub fn run(check: bool) -> Result<()> {
    let root = crate::root();
    let mut stale = Vec::new();
    let mut policies = Vec::new();
    for target in TARGETS {
        let (scratch, generated) = generate(&root, target)?;
        policies.push((target.protos[0], generated.policies.clone()));
        for file in &generated.files {
            crate::run_cmd(
                Command::new("rustfmt")
                    .args(["--edition", "2024"])
                    .arg(file),
            )?;
        }
        let fresh = read_dir(&scratch)?;
        let out_dir = root.join(target.out_dir);
        let current = if out_dir.is_dir() {
            read_dir(&out_dir)?
        } else {
            BTreeMap::new()
        };
        if check {
            for (name, text) in &fresh {
                if current.get(name) != Some(text) {
                    stale.push(format!("{}/{name}", target.out_dir));
                }
            }
            for name in current.keys().filter(|n| !fresh.contains_key(*n)) {
                stale.push(format!("{}/{name} (no longer generated)", target.out_dir));
            }
        } else {
            std::fs::create_dir_all(&out_dir)?;
            for name in current.keys().filter(|n| !fresh.contains_key(*n)) {
                std::fs::remove_file(out_dir.join(name))?;
            }
            for (name, text) in &fresh {
                if current.get(name) != Some(text) {
                    std::fs::write(out_dir.join(name), text)?;
                    println!("wrote {}/{name}", target.out_dir);
                }
            }
        }
        std::fs::remove_dir_all(&scratch)?;
    }
    let mut documents = vec![(crate::policy::FILE, crate::policy::table(&policies))];
    documents.extend(crate::reference::outputs(&root)?);
    for (file, text) in documents {
        let path = root.join(file);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            match check {
                true => stale.push(file.to_owned()),
                false => {
                    std::fs::write(&path, &text)?;
                    println!("wrote {file}");
                }
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated code is stale; run `cargo xtask gen` and commit:\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path())?);
    }
    Ok(files)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keel-gen-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
