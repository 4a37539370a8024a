//! `--instructions`: callgrind's counts of a run, per call.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

use super::{Edge, Load, Mode, measure, measure_around};

/// What callgrind counted over one run: its events (`Ir`, `I1mr`, …, as
/// its `events:` line names them) and their totals.
#[derive(Debug, Default)]
pub(super) struct Counted(BTreeMap<String, u64>);

impl Counted {
    /// Reads a callgrind dump's `events:` and `summary:` lines.
    pub(super) fn parse(dump: &str) -> anyhow::Result<Self> {
        let line = |prefix: &str| {
            dump.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .with_context(|| format!("no {prefix:?} line"))
        };
        let names = line("events:")?.split_whitespace();
        let values = line("summary:")?.split_whitespace();
        ensure!(
            names.clone().count() == values.clone().count(),
            "events and summary differ in length"
        );
        let values = values
            .map(|v| v.parse().with_context(|| format!("bad count {v:?}")))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        Ok(Counted(names.map(str::to_owned).zip(values).collect()))
    }

    pub(super) fn sum(&self, events: &[&str]) -> f64 {
        events.iter().filter_map(|e| self.0.get(*e)).sum::<u64>() as f64
    }

    /// Instructions executed.
    pub(super) const INSTRUCTIONS: &[&str] = &["Ir"];
    /// First-level instruction cache misses.
    pub(super) const L1I_MISSES: &[&str] = &["I1mr"];
    /// First-level data cache misses, reads and writes.
    pub(super) const L1D_MISSES: &[&str] = &["D1mr", "D1mw"];
    /// Last-level cache misses: instructions, data reads and writes.
    pub(super) const LL_MISSES: &[&str] = &["ILmr", "DLmr", "DLmw"];
    /// Mispredicted conditional and indirect branches.
    pub(super) const MISPREDICTIONS: &[&str] = &["Bcm", "Bim"];

    /// The figures printed, as `(heading, events summed)`.
    pub(super) const COLUMNS: [(&str, &[&str]); 5] = [
        ("instr.", Self::INSTRUCTIONS),
        ("L1i miss", Self::L1I_MISSES),
        ("L1d miss", Self::L1D_MISSES),
        ("LL miss", Self::LL_MISSES),
        ("mispredict", Self::MISPREDICTIONS),
    ];

    /// KCachegrind's cycle estimate: `Ir + 10 Bm + 10 L1m + 100 LLm`
    /// (branch mispredictions, first-level and last-level cache misses).
    pub(super) fn cycles(&self) -> f64 {
        self.sum(Self::INSTRUCTIONS)
            + 10.0
                * (self.sum(Self::MISPREDICTIONS)
                    + self.sum(Self::L1I_MISSES)
                    + self.sum(Self::L1D_MISSES))
            + 100.0 * self.sum(Self::LL_MISSES)
    }
}

/// Prints the per-call figures of both modes and Keel's difference.
pub(super) fn print_counted(plain: &Counted, keel: &Counted, requests: u64, target: f64) {
    let per_call = |total: f64| total / requests as f64;
    println!(
        "\nper call (callgrind with its simulated caches and branch predictor; user space, \
         all threads of the server; {requests} calls per mode):"
    );
    let mut heading = format!("{:<11}", "");
    for (name, _) in Counted::COLUMNS {
        heading += &format!("{name:>11}");
    }
    println!("{heading}{:>13}", "est. cycles");
    for (mode, counted) in [("plain", plain), ("keel", keel)] {
        let mut row = format!("{mode:<11}");
        for (_, events) in Counted::COLUMNS {
            row += &format!("{:>11.0}", per_call(counted.sum(events)));
        }
        println!("{row}{:>13.0}", per_call(counted.cycles()));
    }
    let mut row = format!("{:<11}", "keel-plain");
    for (_, events) in Counted::COLUMNS {
        row += &format!("{:>+11.0}", per_call(keel.sum(events) - plain.sum(events)));
    }
    let (plain_cycles, keel_cycles) = (plain.cycles(), keel.cycles());
    println!(
        "{row}{:>+13.0}  ({:+.1}% instructions, {:+.1}% est. cycles)",
        per_call(keel_cycles - plain_cycles),
        (keel.sum(Counted::INSTRUCTIONS) / plain.sum(Counted::INSTRUCTIONS) - 1.0) * 100.0,
        (keel_cycles / plain_cycles - 1.0) * 100.0,
    );
    let ratio = keel.sum(Counted::INSTRUCTIONS) / plain.sum(Counted::INSTRUCTIONS);
    let verdict = if ratio <= target { "PASS" } else { "MISS" };
    println!("keel/plain instructions per call: {ratio:.3}x   target <= {target}x: {verdict}");
    println!(
        "estimated keel/plain throughput from the cycle estimate: {:.3}x \
         (est. cycles = instr. + 10 x (L1 misses + mispredictions) + 100 x LL misses, \
         KCachegrind's estimate; kernel time not included)",
        plain_cycles / keel_cycles
    );
}

/// A warm-up run per mode, then one counted run per mode: callgrind's
/// counters of that mode's server are zeroed just before h2load starts and
/// dumped just after it ends (`callgrind_control`), and the dump's summary
/// is the run's counts. The runs are verified like timed rounds, by reads of
/// the servers' counters outside that window. `dump` is the number of this dump
/// of each server (callgrind numbers them from 1).
pub(super) fn count_events(
    load: &Load,
    requests: u64,
    warmup: u64,
    outs: [&Path; 2],
    dump: usize,
) -> anyhow::Result<(Counted, Counted)> {
    for mode in Mode::BOTH {
        measure(load, mode, warmup)?;
    }
    let plain = count_one(load, Mode::Plain, requests, outs[0], dump)?;
    let keel = count_one(load, Mode::Keel, requests, outs[1], dump)?;
    Ok((plain, keel))
}

/// [`count_events`] of the Keel server alone (for calls only it answers,
/// such as REST ones); `dump` is the number of this dump of its.
pub(super) fn count_keel_only(
    load: &Load,
    requests: u64,
    warmup: u64,
    out: &Path,
    dump: usize,
) -> anyhow::Result<Counted> {
    measure(load, Mode::Keel, warmup)?;
    count_one(load, Mode::Keel, requests, out, dump)
}

/// One counted run of `mode`'s server: zeroed just before h2load starts,
/// dumped just after it ends.
fn count_one(
    load: &Load,
    mode: Mode,
    requests: u64,
    out: &Path,
    dump: usize,
) -> anyhow::Result<Counted> {
    let pid = load.server(mode).pid().to_string();
    let control = |command: &str| {
        crate::run_cmd(
            Command::new("callgrind_control")
                .arg(command)
                .arg(&pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let what = match load.rest {
        Some(_) => "rest",
        None => load.case.name(),
    };
    let dump_name = format!("--dump={}-{what}", mode.name());
    measure_around(load, mode, requests, &mut |edge| match edge {
        Edge::Start => control("--zero"),
        Edge::End => control(&dump_name),
    })?;
    let file = format!("{}.{dump}", out.display());
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let counted = Counted::parse(&text).with_context(|| format!("reading {file}"))?;
    println!(
        "counted {} {what} ({requests} calls): {} instructions",
        mode.name(),
        counted.sum(Counted::INSTRUCTIONS)
    );
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_callgrind_summary_and_estimates_cycles() {
        let dump = "version: 1\n\
                    events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim\n\
                    summary: 1000 300 200 7 2 1 0 1 0 100 4 10 2\n\
                    totals: 1 1 1 1 1 1 1 1 1 1 1 1 1\n";
        let counted = Counted::parse(dump).expect("parses");
        assert_eq!(counted.sum(&["Ir"]), 1000.0);
        assert_eq!(counted.sum(&["D1mr", "D1mw"]), 3.0);
        // 1000 + 10 × (4 + 2 mispredictions + 7 + 2 + 1 L1 misses) + 100 × 1 LL miss.
        assert_eq!(counted.cycles(), 1260.0);
        assert!(Counted::parse("events: Ir Dr\nsummary: 5\n").is_err());
        assert!(Counted::parse("events: Ir\n").is_err());
    }
}
