//! The machine: core pinning, CPU time and memory of processes, core times.

use std::process::{Command, Stdio};

use anyhow::Context;

/// Which cores the server and h2load run on.
pub(super) struct Pinning {
    /// Whether `taskset` pins them (needs it installed and two cores).
    pub(super) enabled: bool,
    pub(super) server_core: usize,
    pub(super) client_core: usize,
}

impl Pinning {
    pub(super) fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let enabled = cores >= 2 && taskset;
        if !enabled {
            eprintln!(
                "warning: not pinning (cores: {cores}, taskset: {taskset}); the server and h2load \
                 share CPUs, so the figures are noisier"
            );
        }
        Pinning {
            enabled,
            server_core: 0,
            client_core: 1,
        }
    }

    pub(super) fn command(&self, core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.enabled {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

pub(super) fn print_machine(pinning: &Pinning) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let h2load = Command::new("h2load")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "machine: {cores} cores, {model}; load average {}",
        load.trim()
    );
    println!("{h2load}");
    if pinning.enabled {
        println!(
            "server pinned to core {}, h2load to core {}",
            pinning.server_core, pinning.client_core
        );
    }
}

/// CPU time of every thread of `pid`, in ns (`/proc/<pid>/task/*/schedstat`,
/// first field: time spent running, user and kernel).
pub(super) fn cpu_time_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("bad {}: {text:?}", path.display()))?;
        total += ns;
    }
    Ok(total)
}

/// CPU time (user + system, in clock ticks) of this process's waited-for
/// children: `cutime` + `cstime` of `/proc/self/stat`.
pub(super) fn children_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: field 3 (state) is index 0.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// Busy and steal time of one core, in clock ticks (`/proc/stat`).
pub(super) struct CoreTimes {
    pub(super) busy: u64,
    pub(super) steal: u64,
}

pub(super) fn core_times(core: usize) -> Option<CoreTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Some(CoreTimes {
        busy: field(0) + field(1) + field(2) + field(5) + field(6),
        steal: field(7),
    })
}

pub(super) fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Peak resident memory of `pid` so far, in KiB (`VmHWM` of `/proc/<pid>/status`).
pub(super) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}
