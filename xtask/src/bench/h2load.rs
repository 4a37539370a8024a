//! The load generator: installing it and reading its report (it is run by
//! `measure`).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

/// What h2load printed.
#[derive(Debug, Default)]
pub(super) struct H2loadReport {
    pub(super) req_per_s: f64,
    pub(super) total: u64,
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) errored: u64,
    pub(super) timeout: u64,
    pub(super) status_2xx: u64,
}

impl H2loadReport {
    /// Parses the summary lines:
    ///
    /// ```text
    /// finished in 2.01s, 99502.48 req/s, 7.12MB/s
    /// requests: 200000 total, 200000 started, 200000 done, 200000 succeeded, 0 failed, 0 errored, 0 timeout
    /// status codes: 200000 2xx, 0 3xx, 0 4xx, 0 5xx
    /// ```
    pub(super) fn parse(output: &str) -> anyhow::Result<Self> {
        let mut report = H2loadReport::default();
        let (mut finished, mut requests, mut status) = (false, false, false);
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix("finished in ") {
                let rps = rest
                    .split(", ")
                    .find_map(|part| part.strip_suffix(" req/s"))
                    .context("no req/s in the `finished in` line")?;
                report.req_per_s = rps
                    .parse()
                    .with_context(|| format!("req/s {rps:?} is not a number"))?;
                finished = true;
            } else if let Some(rest) = line.strip_prefix("requests: ") {
                let counts = counts_by_name(rest)?;
                let get = |name: &str| {
                    counts
                        .get(name)
                        .copied()
                        .with_context(|| format!("no `{name}` count in {line:?}"))
                };
                report.total = get("total")?;
                report.succeeded = get("succeeded")?;
                report.failed = get("failed")?;
                report.errored = get("errored")?;
                report.timeout = get("timeout")?;
                requests = true;
            } else if let Some(rest) = line.strip_prefix("status codes: ") {
                report.status_2xx = counts_by_name(rest)?
                    .get("2xx")
                    .copied()
                    .with_context(|| format!("no 2xx count in {line:?}"))?;
                status = true;
            }
        }
        ensure!(
            finished && requests && status,
            "missing summary lines (finished: {finished}, requests: {requests}, status codes: {status})"
        );
        Ok(report)
    }
}

/// `"200 total, 3 failed"` → {total: 200, failed: 3}.
pub(super) fn counts_by_name(text: &str) -> anyhow::Result<BTreeMap<&str, u64>> {
    text.split(", ")
        .map(|part| {
            let (n, name) = part
                .trim()
                .split_once(' ')
                .with_context(|| format!("expected `<count> <name>`, got {part:?}"))?;
            let n = n
                .parse()
                .with_context(|| format!("{n:?} is not a count in {part:?}"))?;
            Ok((name, n))
        })
        .collect()
}

pub(super) fn ensure_h2load() -> anyhow::Result<()> {
    let present = || {
        Command::new("h2load")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("h2load is missing: installing nghttp2-client");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nghttp2-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        crate::run_cmd(Command::new("apt-get").args(["update"]))
            .context("apt-get update (h2load is missing)")?;
        ensure!(install(), "apt-get install -y nghttp2-client failed");
    }
    ensure!(
        present(),
        "h2load still missing after installing nghttp2-client"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_h2load_summary() {
        let out = "\
finished in 2.01s, 99502.48 req/s, 7.12MB/s
requests: 200000 total, 200000 started, 200000 done, 199990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 199990 2xx, 0 3xx, 0 4xx, 0 5xx
";
        let report = H2loadReport::parse(out).expect("parses");
        assert_eq!(report.req_per_s, 99502.48);
        assert_eq!(report.total, 200_000);
        assert_eq!(report.succeeded, 199_990);
        assert_eq!(report.failed, 10);
        assert_eq!(report.status_2xx, 199_990);
        assert!(H2loadReport::parse("finished in 1s, 5 req/s").is_err());
    }
}
