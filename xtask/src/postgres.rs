//! The PostgreSQL the store tests and benches run against: 127.0.0.1:5432,
//! trust authentication for 127.0.0.1, database `test`.
//!
//! [`ensure()`] makes it so on a Debian machine (as root, like CI): it starts
//! the installed cluster when it is down, installs Debian's `postgresql`
//! when it is absent, allows trust authentication from 127.0.0.1 and
//! creates the database. It fails, with the reason, when it cannot: the
//! PostgreSQL tests must run, not be skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// The variable the tests read the database URL from.
pub const URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

/// The URL [`ensure()`] makes work.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);
const DATABASE: &str = "test";

/// The database URL of the tests: `KEEL_TEST_POSTGRES_URL` when it is set
/// (used as it is), else [`DEFAULT_URL`], after making sure it works.
pub fn ensure() -> Result<String> {
    if let Ok(url) = std::env::var(URL_VAR)
        && !url.trim().is_empty()
    {
        eprintln!("xtask: PostgreSQL tests use {URL_VAR} as set");
        return Ok(url);
    }
    if !listening() {
        start_or_install()?;
    }
    wait_until_listening(Duration::from_secs(60))?;
    crate::ensure_tool("psql", "postgresql-client")?;
    if !can_connect("postgres") {
        allow_trust()?;
    }
    ensure!(
        can_connect("postgres"),
        "PostgreSQL on 127.0.0.1:5432 refuses `psql -h 127.0.0.1 -U postgres` without a password \
         even after allowing trust authentication in pg_hba.conf"
    );
    if !can_connect(DATABASE) {
        psql("postgres", &format!("CREATE DATABASE {DATABASE}"))
            .with_context(|| format!("creating database {DATABASE}"))?;
    }
    ensure!(
        can_connect(DATABASE),
        "database {DATABASE} is still unreachable"
    );
    Ok(DEFAULT_URL.to_owned())
}

fn listening() -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(ADDR), Duration::from_millis(500)).is_ok()
}

fn wait_until_listening(timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !listening() {
        if Instant::now() > deadline {
            bail!("PostgreSQL is not listening on 127.0.0.1:5432 after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// The installed cluster (`/etc/postgresql/<version>/main`), newest version first.
fn cluster() -> Option<(String, PathBuf)> {
    let mut versions: Vec<(u32, String)> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let number = name.split('.').next()?.parse().ok()?;
            Path::new("/etc/postgresql")
                .join(&name)
                .join("main")
                .is_dir()
                .then_some((number, name))
        })
        .collect();
    versions.sort();
    let (_, version) = versions.pop()?;
    let dir = Path::new("/etc/postgresql").join(&version).join("main");
    Some((version, dir))
}

fn start_or_install() -> Result<()> {
    if cluster().is_none() {
        eprintln!("xtask: PostgreSQL is not installed; installing Debian package postgresql");
        crate::ensure_tool("pg_ctlcluster", "postgresql")?;
    }
    let (version, _) = cluster().context(
        "no PostgreSQL cluster under /etc/postgresql/<version>/main; create one with \
         `pg_createcluster <version> main`",
    )?;
    if listening() {
        // The package's installation started it.
        return Ok(());
    }
    eprintln!("xtask: starting PostgreSQL {version} (cluster main)");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "start"])
        .status()
        .context("running pg_ctlcluster")?;
    ensure!(
        status.success(),
        "pg_ctlcluster --skip-systemctl-redirect {version} main start failed: {status}"
    );
    Ok(())
}

/// Puts `host all all 127.0.0.1/32 trust` first in pg_hba.conf and reloads.
fn allow_trust() -> Result<()> {
    let (version, dir) = cluster().context(
        "PostgreSQL on 127.0.0.1:5432 asks for a password, and it is not a local Debian \
         cluster whose pg_hba.conf could allow trust: set KEEL_TEST_POSTGRES_URL",
    )?;
    let hba = dir.join("pg_hba.conf");
    let text =
        std::fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
    const LINE: &str = "host all all 127.0.0.1/32 trust";
    if !text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == LINE)
    {
        eprintln!(
            "xtask: allowing trust authentication from 127.0.0.1 in {}",
            hba.display()
        );
        let updated =
            format!("# Added by `cargo xtask test` for the Keel test database.\n{LINE}\n{text}");
        std::fs::write(&hba, updated).with_context(|| format!("writing {}", hba.display()))?;
    }
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "reload"])
        .status()
        .context("running pg_ctlcluster reload")?;
    ensure!(status.success(), "reloading PostgreSQL failed: {status}");
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn can_connect(database: &str) -> bool {
    psql(database, "SELECT 1").is_ok()
}

/// Runs one statement with `psql` over TCP as `postgres`, never prompting.
fn psql(database: &str, statement: &str) -> Result<()> {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-w",
            "-v",
        ])
        .arg("ON_ERROR_STOP=1")
        .args(["-d", database, "-c", statement])
        .stdin(Stdio::null())
        .output()
        .context("running psql (Debian package postgresql-client)")?;
    ensure!(
        output.status.success(),
        "psql -d {database} -c {statement:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
