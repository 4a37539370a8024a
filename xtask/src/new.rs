//! `cargo xtask new <dir>`: a standalone service crate at `dir` (anywhere,
//! typically outside this repository) that depends on Keel by path: an
//! annotated proto with a public and a scoped method, `build.rs`, a short
//! `main`, the handler, a test with `keel_rpc::testing`, and a Dockerfile.
//! The crate is named after the directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The template's files: where each goes, and its text.
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/service/Cargo.toml.tmpl"),
    ),
    (
        "build.rs",
        include_str!("../templates/service/build.rs.tmpl"),
    ),
    (
        "keel.toml",
        include_str!("../templates/service/keel.toml.tmpl"),
    ),
    (
        "development.toml",
        include_str!("../templates/service/development.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/service/src/lib.rs.tmpl"),
    ),
    (
        "src/main.rs",
        include_str!("../templates/service/src/main.rs.tmpl"),
    ),
    (
        "tests/service.rs",
        include_str!("../templates/service/tests/service.rs.tmpl"),
    ),
    (
        "Dockerfile",
        include_str!("../templates/service/Dockerfile.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/service/gitignore.tmpl"),
    ),
];

/// The names a crate called `name` (`hello-keel`) gets in its files.
#[derive(Debug, PartialEq, Eq)]
struct Names {
    /// The crate: `hello-keel`.
    name: String,
    /// Its Rust path: `hello_keel`.
    krate: String,
    /// The protobuf package's first part: `hello_keel` (`hello_keel.v1`).
    package: String,
    /// The service: `HelloKeelService`.
    service: String,
    /// The service in snake case, as the generated functions are named: `hello_keel_service`.
    service_snake: String,
    /// The scope its scoped method needs: `hello-keel:read`.
    scope: String,
}

impl Names {
    fn of(name: &str) -> Result<Names> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            bail!(
                "{name:?} is not a crate name for a service: start with a lowercase letter, \
                 then lowercase letters, digits, '-' or '_'"
            );
        }
        let snake = name.replace('-', "_");
        let camel: String = snake
            .split('_')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        Ok(Names {
            name: name.to_owned(),
            krate: snake.clone(),
            package: snake.clone(),
            service: format!("{camel}Service"),
            service_snake: format!("{}_service", snake.trim_end_matches('_')),
            scope: format!("{name}:read"),
        })
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    let [dir] = args else {
        bail!("usage: cargo xtask new <dir>");
    };
    let dir = PathBuf::from(dir);
    let name = dir.file_name().and_then(|n| n.to_str()).with_context(|| {
        format!(
            "{}: no directory name to name the crate after",
            dir.display()
        )
    })?;
    let names = Names::of(name)?;
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let root = crate::root()
        .canonicalize()
        .context("the Keel repository's path")?;
    write(&dir, &names, &root)?;
    let dir = dir.canonicalize().context("the new crate's path")?;
    // The names change how the code wraps: format it as `cargo fmt` would.
    let sources: Vec<PathBuf> = FILES
        .iter()
        .filter(|(path, _)| path.ends_with(".rs"))
        .map(|(path, _)| dir.join(path))
        .collect();
    let mut rustfmt = std::process::Command::new("rustfmt");
    rustfmt.args(["--edition", "2024"]).args(&sources);
    crate::run_cmd(&mut rustfmt).context("formatting the new crate (rustfmt)")?;
    println!(
        "created {} (crate {}, service {}.v1.{})\n  cd {} && cargo test",
        dir.display(),
        names.name,
        names.package,
        names.service,
        dir.display()
    );
    Ok(())
}

/// Writes the template into `dir`, Keel's crates found under `root`.
fn write(dir: &Path, names: &Names, root: &Path) -> Result<()> {
    let fill = |text: &str| {
        text.replace("{{name}}", &names.name)
            .replace("{{crate}}", &names.krate)
            .replace("{{package}}", &names.package)
            .replace("{{Service}}", &names.service)
            .replace("{{service_snake}}", &names.service_snake)
            .replace("{{SERVICE}}", &names.service_snake.to_uppercase())
            .replace("{{scope}}", &names.scope)
            .replace("{{runtime}}", &root.join("runtime").display().to_string())
            .replace("{{codegen}}", &root.join("codegen").display().to_string())
            .replace("{{keel_root}}", &root.display().to_string())
    };
    let proto = format!("proto/{0}/v1/{0}.proto", names.package);
    let service_proto = include_str!("../templates/service/proto/service.proto.tmpl");
    for (path, text) in FILES
        .iter()
        .map(|(p, t)| (p.to_string(), *t))
        .chain([(proto, service_proto)])
    {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(text)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_directory() {
        let names = Names::of("hello-keel").unwrap();
        assert_eq!(
            names,
            Names {
                name: "hello-keel".into(),
                krate: "hello_keel".into(),
                package: "hello_keel".into(),
                service: "HelloKeelService".into(),
                service_snake: "hello_keel_service".into(),
                scope: "hello-keel:read".into(),
            }
        );
        for bad in ["", "Hello", "9lives", "a b", "ünï"] {
            assert!(Names::of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = std::env::temp_dir().join(format!("keel-xtask-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, &Names::of("greeter").unwrap(), Path::new("/keel")).unwrap();
        let mut files = vec![dir.join("proto/greeter/v1/greeter.proto")];
        files.extend(FILES.iter().map(|(p, _)| dir.join(p)));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("{{"), "{}: {text}", file.display());
        }
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains(r#"keel-rpc = { path = "/keel/runtime" }"#),
            "{cargo}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
