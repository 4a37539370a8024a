//! `cargo xtask bench [--quick] [--no-criterion] [--rounds N] [--requests N]
//! [--handler fixed|users|both] [--traced [--sampling R]] [--instructions]`:
//! what Keel's layers cost per call, end to end.
//!
//! 1. Builds `bench-server` (release), which serves the same `GetUser`
//!    handler twice in one process: plain tonic, and the generated server
//!    wrapped in Keel's layers (HS256 auth, metrics, …). See
//!    `examples/user-service/src/bin/bench-server.rs`.
//! 2. Installs h2load (`apt-get install nghttp2-client`) when it is missing.
//! 3. For each handler (`fixed`: the user from memory, so Keel's share of a
//!    cheap call shows; `users`: the real `Users` handler and its SQLite
//!    store), starts the server pinned to core 0 and runs h2load pinned to
//!    core 1, alternating plain and keel (odd rounds plain first, even
//!    rounds keel first): one warm-up round each, then `--rounds` measured
//!    rounds each. Both modes get the identical request:
//!    gRPC headers, the same bearer token and the same body.
//! 4. Per round it records h2load's requests/s and the server's CPU time
//!    (sum of `/proc/<pid>/task/*/schedstat`), and verifies against the
//!    server's own counters that every response h2load counted as succeeded
//!    was a successful `GetUser` (h2load counts any HTTP 200, whatever the
//!    `grpc-status`); for keel, Keel's `grpc_server_handled_total{grpc_code="OK"}`
//!    must agree too. Any failed request or mismatch fails the bench. It also
//!    reads how much of each core other processes used (`/proc/stat` minus
//!    the server's and h2load's own time) and repeats a round that others
//!    disturbed.
//! 5. Prints per-mode medians and, paired per round, the keel/plain
//!    throughput ratio and the CPU time keel adds per request: their medians
//!    over the rounds with a 95% confidence interval (distribution-free:
//!    order statistics). The verdict against a target is PASS when the whole
//!    interval meets it, MISS when none of it does, and UNDECIDED when the
//!    target lies inside (too noisy a machine for that many rounds). A miss
//!    is reported, not an error: only a failed verification exits non-zero.
//!    Last, the keel/plain ratio of CPU per request, paired the same way:
//!    Keel's share of a call, which moves far less between fast and slow
//!    machines than the µs it adds, beside what the 0.5 µs target allows at
//!    the run's speed.
//! 6. Runs the criterion micro-benchmarks (`cargo bench -p keel --bench
//!    layer`), unless `--quick` or `--no-criterion`.
//!
//! `--quick` is a smoke run (few requests, no criterion); its figures are
//! not meaningful.
//!
//! `--traced` measures the full stack with telemetry on: bench-server calls
//! `keel::telemetry::init` with sampling ratio 1% (`--sampling R` to change
//! it) and an OTLP/gRPC exporter (batch span processor) pointed at a trace
//! sink, `bench-server --otlp-sink`, a second process pinned to h2load's core
//! (as a collector would run elsewhere) that counts the spans it receives.
//! So "keel" then pays, on the server's core, for the server span of every
//! call (ids, sampling decision, context), the recording of the sampled ones
//! and their batched encoding and export. Target: keel ≥ 0.93× plain. After
//! the rounds it checks that the sink received about `R` of the keel calls
//! as spans.
//!
//! `--instructions` counts instead of timing: the server runs under
//! callgrind (valgrind, installed when missing) with its cache and branch
//! predictor simulation, and after a warm-up each mode gets one run of
//! 20 000 calls between `callgrind_control --zero` and `--dump`, the server
//! answering with a constant `date` header (`bench-server --fixed-date`:
//! hyper's changing one adds an HPACK table entry per second, so the cost
//! of a response grew with a run's wall time). It prints
//! per call, for each mode and Keel's difference: instructions, first-level
//! instruction and data cache misses, last-level misses, branch
//! mispredictions, and KCachegrind's cycle estimate from them, which moves
//! by about ±0.7% from run to run (how h2load's requests batch changes h2's
//! work), where CPU time on a shared VM moves by tens of percent. Keel's
//! code runs once per call among much more of hyper's and h2's, so most of
//! its lines are instruction cache misses: the estimate follows the timed
//! ratio where the instruction count alone says half of it
//! (BENCHMARKS.md). Combines with `--traced` and `--handler`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Target: keel throughput at least this fraction of plain.
const TARGET_RATIO: f64 = 0.95;
/// Target with `--traced`: keel with telemetry on (sampling 1%, exporting)
/// at least this fraction of plain.
const TARGET_RATIO_TRACED: f64 = 0.93;
/// Sampling ratio of `--traced` unless `--sampling` says otherwise.
const TRACED_SAMPLING: f64 = 0.01;
/// Target: keel adds at most this much server CPU per request, in µs.
const TARGET_ADDED_CPU_US: f64 = 0.5;

/// A run is disturbed when other work took more than this share of a core.
const MAX_OTHER: f64 = 0.05;
/// How many times a disturbed round is repeated before it is kept anyway (flagged).
const MAX_REPEATS: usize = 3;

const METHOD_PATH: &str = "/user.v1.UserService/GetUser";

struct Options {
    rounds: usize,
    requests: u64,
    warmup_requests: u64,
    clients: u32,
    streams: u32,
    criterion: bool,
    quick: bool,
    handlers: Vec<Handler>,
    /// `--traced`: the sampling ratio of Keel's telemetry in bench-server.
    traced: Option<f64>,
    /// `--instructions`: count instructions with callgrind instead of timing.
    instructions: bool,
}

/// What answers `GetUser` in the bench server (`bench-server --handler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handler {
    /// The user cloned from memory: the call is little besides the gRPC
    /// stack, so Keel's share shows.
    Fixed,
    /// `Users::get_user`: a query of the in-memory SQLite store.
    Users,
}

impl Handler {
    fn name(self) -> &'static str {
        match self {
            Handler::Fixed => "fixed",
            Handler::Users => "users",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Handler::Fixed => "GetUser answers the startup user from memory",
            Handler::Users => "GetUser reads the user from Users' store (in-memory SQLite)",
        }
    }

    /// Requests per round relative to `--requests`: the store's handler is
    /// several times slower, so its rounds are shorter in requests but not
    /// in time.
    fn divisor(self) -> u64 {
        match self {
            Handler::Fixed => 1,
            Handler::Users => 4,
        }
    }
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Self> {
        // Many short rounds rather than a few long ones: a VM's speed drifts
        // (by 2× within minutes on some), the paired figures compare rounds
        // that ran side by side, and their 95% interval narrows with the
        // number of rounds (61: from the 23rd to the 39th of them, sorted).
        let mut options = Options {
            rounds: 61,
            requests: 20_000,
            warmup_requests: 60_000,
            clients: 16,
            streams: 32,
            criterion: true,
            quick: false,
            handlers: vec![Handler::Fixed, Handler::Users],
            traced: None,
            instructions: false,
        };
        let mut rounds = None;
        let mut requests = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value"))
                    .map(|v| v.to_string())
            };
            match *arg {
                "--quick" => options.quick = true,
                "--traced" => {
                    options.traced.get_or_insert(TRACED_SAMPLING);
                }
                "--sampling" => {
                    let v = value("--sampling")?;
                    let ratio = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .with_context(|| format!("--sampling: {v:?} is not a ratio in 0..=1"))?;
                    options.traced = Some(ratio);
                }
                "--no-criterion" => options.criterion = false,
                "--instructions" => options.instructions = true,
                "--rounds" => {
                    let v = value("--rounds")?;
                    rounds =
                        Some(v.parse::<usize>().with_context(|| {
                            format!("--rounds: {v:?} is not a number of rounds")
                        })?);
                }
                "--requests" => {
                    let v = value("--requests")?;
                    requests = Some(v.parse::<u64>().with_context(|| {
                        format!("--requests: {v:?} is not a number of requests")
                    })?);
                }
                "--handler" => {
                    options.handlers = match value("--handler")?.as_str() {
                        "fixed" => vec![Handler::Fixed],
                        "users" => vec![Handler::Users],
                        "both" => vec![Handler::Fixed, Handler::Users],
                        other => bail!("--handler: {other:?} is not fixed, users or both"),
                    };
                }
                other => bail!(
                    "bench: unknown argument {other:?}; usage: cargo xtask bench [--quick] \
                     [--no-criterion] [--rounds N] [--requests N] [--handler fixed|users|both] \
                     [--traced [--sampling R]] [--instructions]"
                ),
            }
        }
        if options.quick {
            options.rounds = 3;
            options.requests = 10_000;
            options.warmup_requests = 5_000;
            options.criterion = false;
        }
        if options.instructions {
            // Counts do not drift: one run per mode, short because
            // callgrind, simulating caches, runs the server some 100 times slower.
            options.rounds = 1;
            options.requests = 20_000;
            options.warmup_requests = 2_000;
            options.criterion = false;
        }
        if let Some(rounds) = rounds {
            ensure!(rounds >= 1, "--rounds must be at least 1");
            options.rounds = rounds;
        }
        if let Some(requests) = requests {
            let min = u64::from(options.clients);
            ensure!(requests >= min, "--requests must be at least {min}");
            options.requests = requests;
            options.warmup_requests = options.warmup_requests.min(requests);
        }
        Ok(options)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Plain,
    Keel,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Keel => "keel",
        }
    }
}

/// What one h2load run against one mode measured.
#[derive(Debug)]
struct Sample {
    mode: Mode,
    req_per_s: f64,
    cpu_us_per_req: f64,
    /// Server CPU time / wall time of the run.
    server_busy: f64,
    /// Other work on the server's core (not the server) / wall time.
    core_other: f64,
    /// Hypervisor steal on the server's core / wall time.
    core_steal: f64,
    /// h2load's CPU time / wall time.
    client_busy: f64,
    /// Other work on h2load's core (not h2load) / wall time.
    client_other: f64,
}

impl Sample {
    /// Whether other processes (or the hypervisor) took a noticeable share
    /// of either core during the run. NaN (unpinned) is never disturbed.
    fn disturbed(&self) -> bool {
        self.core_other > MAX_OTHER || self.client_other > MAX_OTHER || self.core_steal > MAX_OTHER
    }

    fn print(&self, label: &str, note: &str) {
        println!(
            "{:<6} {:<6} {:>9.0} {:>11.2} {:>12.0}% {:>11.0}% {:>11.1}% {:>11.1}% {:>7.1}% {note}",
            label,
            self.mode.name(),
            self.req_per_s,
            self.cpu_us_per_req,
            self.server_busy * 100.0,
            self.client_busy * 100.0,
            self.core_other * 100.0,
            self.client_other * 100.0,
            self.core_steal * 100.0,
        );
    }
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    super::run_cmd(Command::new(&cargo).args([
        "build",
        "--release",
        "-p",
        "user-service",
        "--bin",
        "bench-server",
    ]))?;
    ensure_h2load()?;
    if options.instructions {
        crate::ensure_tool("valgrind", "valgrind")?;
    }

    let target = crate::target_dir();
    let server_bin = target.join("release").join("bench-server");
    let work = target.join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let token_file = work.join("token");
    let body_file = work.join("get-user.body");

    let pinning = Pinning::detect();
    print_machine(&pinning);

    let clk_tck = clk_tck();
    println!(
        "\nh2load: -c {} -m {} -t 1; {} measured rounds per mode (plus one warm-up), \
         alternating plain/keel",
        options.clients, options.streams, options.rounds
    );
    println!(
        "(\"other\": time other processes used on the server's core 0 and h2load's core 1; a \
         round in which other work or steal exceeds {:.0}% of a core is repeated, up to {} times)",
        MAX_OTHER * 100.0,
        if options.quick { 0 } else { MAX_REPEATS }
    );
    for &handler in &options.handlers {
        // `--traced`: a trace sink in its own process, on h2load's core, like
        // a collector elsewhere; the server exports to it.
        let sink = match options.traced {
            Some(ratio) => Some((Sink::start(&server_bin, &pinning)?, ratio)),
            None => None,
        };
        let traced = sink
            .as_ref()
            .map(|(sink, ratio)| (*ratio, format!("http://{}", sink.otlp)));
        let callgrind_out = work.join(format!("callgrind-{}.out", handler.name()));
        let server = Server::start(
            &server_bin,
            handler,
            &token_file,
            &body_file,
            &pinning,
            traced,
            options.instructions.then_some(callgrind_out.as_path()),
        )?;
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let token = token.trim();
        ensure!(!token.is_empty(), "bench-server wrote an empty token");
        let min = u64::from(options.clients);
        let requests = (options.requests / handler.divisor()).max(min);
        let warmup = (options.warmup_requests / handler.divisor()).max(min);
        println!(
            "\n== handler `{}`: {}; {requests} requests per round, warm-up {warmup}",
            handler.name(),
            handler.describe()
        );
        if let Some(ratio) = options.traced {
            println!(
                "--traced: keel runs with telemetry on: sampling ratio {ratio}, spans batched and \
                 exported over OTLP/gRPC to the sink (plain is unchanged)"
            );
        }
        let load = Load {
            server: &server,
            options: &options,
            token,
            body_file: &body_file,
            pinning: &pinning,
            clk_tck,
        };
        if options.instructions {
            let (plain, keel) = count_events(&load, requests, warmup, &callgrind_out)?;
            drop(server);
            print_counted(&plain, &keel, requests);
            continue;
        }
        let rounds = run_rounds(&load, requests, warmup)?;
        if let Some((sink, ratio)) = &sink {
            let keel_calls = server.counts()?.get("keel_ok").copied().unwrap_or(0);
            check_exported_spans(sink, *ratio, keel_calls)?;
        }
        drop(server);
        drop(sink);
        summarize(&rounds.samples, options.quick, options.traced);
        if rounds.repeated > 0 || rounds.kept_disturbed > 0 {
            println!(
                "note: {} round(s) repeated because other work used the cores; \
                 {} measured round(s) still disturbed (kept, marked above)",
                rounds.repeated, rounds.kept_disturbed
            );
        }
    }

    if options.criterion {
        println!("\ncriterion micro-benchmarks (cargo bench -p keel --bench layer):");
        super::run_cmd(Command::new(&cargo).args(["bench", "-p", "keel", "--bench", "layer"]))?;
    }
    if options.traced.is_some() || options.instructions {
        // `--traced` and `--instructions` are about the layers' cost, not the auth service.
        return Ok(());
    }
    println!("\nauth service (cargo xtask bench-auth):");
    crate::bench_auth::run(if options.quick { &["--quick"] } else { &[] })
}

/// The measured rounds against one server.
struct Rounds {
    samples: Vec<Sample>,
    repeated: usize,
    kept_disturbed: usize,
}

/// What every h2load run against one server needs.
struct Load<'a> {
    server: &'a Server,
    options: &'a Options,
    /// The bearer token sent with every request.
    token: &'a str,
    /// The gRPC-framed `GetUserRequest` h2load sends.
    body_file: &'a Path,
    pinning: &'a Pinning,
    /// Clock ticks per second of `/proc/stat`.
    clk_tck: u64,
}

/// A warm-up round, then `options.rounds` measured ones, each running both
/// modes back to back (the order alternates); a round disturbed by other work is repeated (up to [`MAX_REPEATS`]).
fn run_rounds(load: &Load, requests: u64, warmup: u64) -> anyhow::Result<Rounds> {
    let options = load.options;
    println!(
        "\n{:<6} {:<6} {:>9} {:>11} {:>13} {:>12} {:>12} {:>12} {:>8}",
        "round",
        "mode",
        "req/s",
        "CPU µs/req",
        "server busy",
        "h2load busy",
        "core0 other",
        "core1 other",
        "steal"
    );
    let mut rounds = Rounds {
        samples: Vec::new(),
        repeated: 0,
        kept_disturbed: 0,
    };
    for round in 0..=options.rounds {
        let (label, requests) = if round == 0 {
            ("warm".to_string(), warmup)
        } else {
            (round.to_string(), requests)
        };
        let repeats = if round == 0 || options.quick {
            0
        } else {
            MAX_REPEATS
        };
        for attempt in 0..=repeats {
            // Odd rounds run plain first, even rounds keel first, so that
            // neither mode always follows the other (cache and allocator
            // state, frequency changes, a neighbour's load).
            let order = if round % 2 == 1 {
                [Mode::Plain, Mode::Keel]
            } else {
                [Mode::Keel, Mode::Plain]
            };
            let mut pair = Vec::new();
            for mode in order {
                let sample = measure(load, mode, requests)
                    .with_context(|| format!("round {label}, {}", mode.name()))?;
                pair.push(sample);
            }
            let disturbed = pair.iter().any(Sample::disturbed);
            let last = attempt == repeats;
            let note = match (disturbed, last, round) {
                (false, _, _) => "",
                (true, _, 0) => "(disturbed)",
                (true, false, _) => "(disturbed: repeating)",
                (true, true, _) => "(disturbed: kept)",
            };
            for sample in &pair {
                sample.print(&label, note);
            }
            if !disturbed || last {
                if round > 0 {
                    rounds.kept_disturbed += usize::from(disturbed);
                    rounds.samples.extend(pair);
                }
                break;
            }
            rounds.repeated += 1;
        }
    }
    Ok(rounds)
}

/// What callgrind counted over one run: its events (`Ir`, `I1mr`, …, as
/// its `events:` line names them) and their totals.
#[derive(Debug, Default)]
struct Counted(BTreeMap<String, u64>);

impl Counted {
    /// Reads a callgrind dump's `events:` and `summary:` lines.
    fn parse(dump: &str) -> anyhow::Result<Self> {
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

    fn sum(&self, events: &[&str]) -> f64 {
        events.iter().filter_map(|e| self.0.get(*e)).sum::<u64>() as f64
    }

    /// Instructions executed.
    const INSTRUCTIONS: &[&str] = &["Ir"];
    /// First-level instruction cache misses.
    const L1I_MISSES: &[&str] = &["I1mr"];
    /// First-level data cache misses, reads and writes.
    const L1D_MISSES: &[&str] = &["D1mr", "D1mw"];
    /// Last-level cache misses: instructions, data reads and writes.
    const LL_MISSES: &[&str] = &["ILmr", "DLmr", "DLmw"];
    /// Mispredicted conditional and indirect branches.
    const MISPREDICTIONS: &[&str] = &["Bcm", "Bim"];

    /// The figures printed, as `(heading, events summed)`.
    const COLUMNS: [(&str, &[&str]); 5] = [
        ("instr.", Self::INSTRUCTIONS),
        ("L1i miss", Self::L1I_MISSES),
        ("L1d miss", Self::L1D_MISSES),
        ("LL miss", Self::LL_MISSES),
        ("mispredict", Self::MISPREDICTIONS),
    ];

    /// KCachegrind's cycle estimate: `Ir + 10 Bm + 10 L1m + 100 LLm`
    /// (branch mispredictions, first-level and last-level cache misses).
    fn cycles(&self) -> f64 {
        self.sum(Self::INSTRUCTIONS)
            + 10.0
                * (self.sum(Self::MISPREDICTIONS)
                    + self.sum(Self::L1I_MISSES)
                    + self.sum(Self::L1D_MISSES))
            + 100.0 * self.sum(Self::LL_MISSES)
    }
}

/// Prints the per-call figures of both modes and Keel's difference.
fn print_counted(plain: &Counted, keel: &Counted, requests: u64) {
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
    println!(
        "estimated keel/plain throughput from the cycle estimate: {:.3}x \
         (est. cycles = instr. + 10 x (L1 misses + mispredictions) + 100 x LL misses, \
         KCachegrind's estimate; kernel time not included)",
        plain_cycles / keel_cycles
    );
}

/// A warm-up run per mode, then one counted run per mode: callgrind's
/// counters are zeroed before it and dumped after it (`callgrind_control`),
/// and the dump's summary is the run's counts. The runs are verified like
/// timed rounds.
fn count_events(
    load: &Load,
    requests: u64,
    warmup: u64,
    out: &Path,
) -> anyhow::Result<(Counted, Counted)> {
    let pid = load.server.pid().to_string();
    let control = |command: &str| {
        super::run_cmd(
            Command::new("callgrind_control")
                .arg(command)
                .arg(&pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    for mode in [Mode::Plain, Mode::Keel] {
        measure(load, mode, warmup)?;
    }
    let mut counted = [Counted::default(), Counted::default()];
    for (dump, mode) in [Mode::Plain, Mode::Keel].into_iter().enumerate() {
        control("--zero")?;
        measure(load, mode, requests)?;
        control(&format!("--dump={}", mode.name()))?;
        // Dumps are numbered from 1 after the output file's name.
        let file = format!("{}.{}", out.display(), dump + 1);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
        counted[dump] = Counted::parse(&text).with_context(|| format!("reading {file}"))?;
        println!(
            "counted {} ({requests} calls): {} instructions",
            mode.name(),
            counted[dump].sum(Counted::INSTRUCTIONS)
        );
    }
    let [plain, keel] = counted;
    Ok((plain, keel))
}

/// With `--traced`: the spans the sink received, once the batch processor
/// has flushed (it exports at least every 5 s), must be about `ratio` of the
/// keel calls: sampling and export really ran.
fn check_exported_spans(sink: &Sink, ratio: f64, keel_calls: u64) -> anyhow::Result<()> {
    let spans = |sink: &Sink| -> anyhow::Result<u64> {
        let body = http_get(sink.http, "/counts")?;
        let spans = body
            .lines()
            .find_map(|l| l.strip_prefix("otlp_spans "))
            .context("the sink's /counts has no otlp_spans")?;
        spans
            .trim()
            .parse()
            .with_context(|| format!("bad otlp_spans {spans:?}"))
    };
    let expected = ratio * keel_calls as f64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = spans(sink)?;
    loop {
        std::thread::sleep(Duration::from_secs(6));
        let now = spans(sink)?;
        let settled = now == last;
        last = now;
        if settled || Instant::now() > deadline {
            break;
        }
    }
    println!(
        "exported spans: {last} for {keel_calls} keel calls ({:.3}%; sampling ratio {:.3}%)",
        100.0 * last as f64 / keel_calls.max(1) as f64,
        100.0 * ratio
    );
    ensure!(
        (last as f64) >= 0.5 * expected && (last as f64) <= 1.5 * expected + 10.0,
        "the sink received {last} spans; about {expected:.0} were expected"
    );
    Ok(())
}

/// One h2load run against `mode`, verified.
#[allow(clippy::too_many_arguments)]
fn measure(load: &Load, mode: Mode, requests: u64) -> anyhow::Result<Sample> {
    let Load {
        server,
        options,
        token,
        body_file,
        pinning,
        clk_tck,
    } = *load;
    let addr = match mode {
        Mode::Plain => server.plain,
        Mode::Keel => server.keel,
    };
    let counts_before = server.counts()?;
    let metrics_before = server.handled_ok()?;
    let core_before = core_times(pinning.server_core);
    let client_before = core_times(pinning.client_core);
    let cpu_before = cpu_time_ns(server.pid())?;
    let children_before = children_cpu_ticks();
    let start = Instant::now();

    let mut h2load = pinning.command(pinning.client_core, "h2load");
    h2load
        .args(["-n", &requests.to_string()])
        .args(["-c", &options.clients.to_string()])
        .args(["-m", &options.streams.to_string()])
        .args(["-t", "1"])
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"])
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg("-d")
        .arg(body_file)
        .arg(format!("http://{addr}{METHOD_PATH}"));
    let output = h2load
        .stdin(Stdio::null())
        .output()
        .context("running h2load")?;

    let wall_ns = start.elapsed().as_nanos() as f64;
    let cpu_after = cpu_time_ns(server.pid())?;
    let children_after = children_cpu_ticks();
    let core_after = core_times(pinning.server_core);
    let client_after = core_times(pinning.client_core);
    let counts_after = server.counts()?;
    let metrics_after = server.handled_ok()?;

    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "h2load failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report = H2loadReport::parse(&stdout)
        .with_context(|| format!("parsing h2load's output:\n{stdout}"))?;

    // Verification: every request answered, and every answer a real success.
    let delta = |key: &str| {
        let get = |counts: &BTreeMap<String, u64>| counts.get(key).copied().unwrap_or(0);
        get(&counts_after).saturating_sub(get(&counts_before))
    };
    let (own, other) = match mode {
        Mode::Plain => ("plain", "keel"),
        Mode::Keel => ("keel", "plain"),
    };
    let own_ok = delta(&format!("{own}_ok"));
    let mut problems = Vec::new();
    if report.succeeded != requests || report.total != requests {
        problems.push(format!(
            "h2load: {} of {requests} requests succeeded ({} total)",
            report.succeeded, report.total
        ));
    }
    if report.failed != 0 || report.errored != 0 || report.timeout != 0 {
        problems.push(format!(
            "h2load: {} failed, {} errored, {} timed out",
            report.failed, report.errored, report.timeout
        ));
    }
    if report.status_2xx != report.succeeded {
        problems.push(format!(
            "h2load: {} succeeded but {} HTTP 2xx",
            report.succeeded, report.status_2xx
        ));
    }
    if own_ok != report.succeeded {
        problems.push(format!(
            "h2load counted {} successes, but the {own} handler answered {own_ok} GetUser calls OK \
             (and {} with an error)",
            report.succeeded,
            delta(&format!("{own}_err")),
        ));
    }
    for key in [
        format!("{own}_err"),
        format!("{other}_ok"),
        format!("{other}_err"),
    ] {
        if delta(&key) != 0 {
            problems.push(format!("server counter {key} moved by {}", delta(&key)));
        }
    }
    let metrics_ok = metrics_after.saturating_sub(metrics_before);
    let expected_metrics = if mode == Mode::Keel {
        report.succeeded
    } else {
        0
    };
    if metrics_ok != expected_metrics {
        problems.push(format!(
            "keel metrics counted {metrics_ok} OK GetUser calls, expected {expected_metrics}"
        ));
    }
    if !problems.is_empty() {
        bail!(
            "verification failed:\n  {}\nh2load output:\n{stdout}",
            problems.join("\n  ")
        );
    }

    let cpu_ns = cpu_after.saturating_sub(cpu_before) as f64;
    // Core statistics only mean something when the processes are pinned.
    let tick_ns = 1e9 / clk_tck as f64;
    let ticks = |before: &Option<CoreTimes>,
                 after: &Option<CoreTimes>,
                 f: fn(&CoreTimes) -> u64| match (before, after) {
        (Some(b), Some(a)) if pinning.enabled => f(a).saturating_sub(f(b)) as f64 * tick_ns,
        _ => f64::NAN,
    };
    let core_busy_ns = ticks(&core_before, &core_after, |t| t.busy);
    let core_steal_ns = ticks(&core_before, &core_after, |t| t.steal);
    let client_core_ns = ticks(&client_before, &client_after, |t| t.busy);
    // h2load is the only child waited for in the window (taskset execs it).
    let client_cpu_ns = match (children_before, children_after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 * tick_ns,
        _ => f64::NAN,
    };
    Ok(Sample {
        mode,
        req_per_s: report.req_per_s,
        cpu_us_per_req: cpu_ns / requests as f64 / 1000.0,
        server_busy: cpu_ns / wall_ns,
        core_other: non_negative((core_busy_ns - cpu_ns) / wall_ns),
        core_steal: core_steal_ns / wall_ns,
        client_busy: client_cpu_ns / wall_ns,
        client_other: non_negative((client_core_ns - client_cpu_ns) / wall_ns),
    })
}

/// Clamps tick-rounding noise below zero; keeps NaN (no figure) as NaN.
fn non_negative(x: f64) -> f64 {
    if x < 0.0 { 0.0 } else { x }
}

fn summarize(samples: &[Sample], quick: bool, traced: Option<f64>) {
    let stat = |mode: Mode, f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().filter(|s| s.mode == mode).map(f).collect();
        median(&mut values)
    };
    let rounds = samples.iter().filter(|s| s.mode == Mode::Plain).count();
    println!("\nmedians of {rounds} rounds:");
    println!(
        "{:<6} {:>10} {:>12} {:>10} {:>10}",
        "mode", "req/s", "CPU µs/req", "min req/s", "max req/s"
    );
    let mut medians = BTreeMap::new();
    for mode in [Mode::Plain, Mode::Keel] {
        let rps = stat(mode, |s| s.req_per_s);
        let cpu = stat(mode, |s| s.cpu_us_per_req);
        let (min, max) = samples
            .iter()
            .filter(|s| s.mode == mode)
            .fold((f64::INFINITY, 0f64), |(lo, hi), s| {
                (lo.min(s.req_per_s), hi.max(s.req_per_s))
            });
        println!(
            "{:<6} {:>10.0} {:>12.2} {:>10.0} {:>10.0}",
            mode.name(),
            rps,
            cpu,
            min,
            max
        );
        medians.insert(mode, (rps, cpu));
    }
    let (plain_rps, plain_cpu) = medians[&Mode::Plain];
    let (keel_rps, keel_cpu) = medians[&Mode::Keel];
    // The verdicts use the rounds paired (a round's two runs back to back):
    // the machine's drift, which moves both runs of a round alike, cancels.
    let plains: Vec<&Sample> = samples.iter().filter(|s| s.mode == Mode::Plain).collect();
    let keels: Vec<&Sample> = samples.iter().filter(|s| s.mode == Mode::Keel).collect();
    let ratio = Paired::of(
        plains
            .iter()
            .zip(&keels)
            .map(|(p, k)| k.req_per_s / p.req_per_s),
    );
    let added = Paired::of(
        plains
            .iter()
            .zip(&keels)
            .map(|(p, k)| k.cpu_us_per_req - p.cpu_us_per_req),
    );
    // Keel's CPU as a share of a plain call: it moves far less between fast
    // and slow machines than the µs Keel adds (BENCHMARKS.md).
    let cpu_ratio = Paired::of(
        plains
            .iter()
            .zip(&keels)
            .map(|(p, k)| k.cpu_us_per_req / p.cpu_us_per_req),
    );
    let target = match traced {
        Some(_) => TARGET_RATIO_TRACED,
        None => TARGET_RATIO,
    };
    if let Some(sampling) = traced {
        println!(
            "(keel = the full stack with telemetry on, sampling {:.1}%, exporting)",
            sampling * 100.0
        );
    }
    println!(
        "\nkeel/plain throughput: paired median {:.3}x, {}; ratio of medians {:.3}x   \
         target >= {target}x: {}",
        ratio.median,
        ratio.interval_text(|x| format!("{x:.3}x")),
        keel_rps / plain_rps,
        ratio.verdict(|x| x >= target),
    );
    let verdict = match traced {
        Some(_) => format!("(the {TARGET_ADDED_CPU_US} µs target is for keel without telemetry)"),
        None => format!(
            "target <= {TARGET_ADDED_CPU_US} µs: {}",
            added.verdict(|x| x <= TARGET_ADDED_CPU_US)
        ),
    };
    println!(
        "keel added CPU:        paired median {:+.2} µs/request, {}; difference of medians {:+.2}   {verdict}",
        added.median,
        added.interval_text(|x| format!("{x:+.2}")),
        keel_cpu - plain_cpu,
    );
    println!(
        "keel/plain CPU:        paired median {:.3}x, {}; +{TARGET_ADDED_CPU_US} µs on this \
         run's plain median ({plain_cpu:.2} µs) is {:.3}x",
        cpu_ratio.median,
        cpu_ratio.interval_text(|x| format!("{x:.3}x")),
        1.0 + TARGET_ADDED_CPU_US / plain_cpu,
    );
    println!(
        "verified: every response h2load counted as succeeded was a successful GetUser \
         (server counters; for keel also grpc_server_handled_total)"
    );
    if quick {
        println!("(--quick: too few requests for these figures to mean much)");
    }
}

/// One per-round figure of keel against plain over all rounds: its median,
/// and a 95% confidence interval for that median.
struct Paired {
    median: f64,
    /// `None` with fewer than 6 rounds, too few for a 95% interval.
    interval: Option<(f64, f64)>,
    rounds: usize,
}

impl Paired {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        Paired {
            median: median(&mut values),
            interval: median_interval(&values, 0.95),
            rounds: values.len(),
        }
    }

    fn interval_text(&self, show: impl Fn(f64) -> String) -> String {
        match self.interval {
            Some((lo, hi)) => format!(
                "95% interval {} .. {} ({} rounds)",
                show(lo),
                show(hi),
                self.rounds
            ),
            None => format!("no interval from {} rounds (6 needed)", self.rounds),
        }
    }

    /// PASS when the whole interval meets the target, MISS when none of it
    /// does, UNDECIDED when the target lies inside it (the machine was too
    /// noisy for this many rounds to tell) or there is no interval.
    fn verdict(&self, meets: impl Fn(f64) -> bool) -> &'static str {
        match self.interval.map(|(lo, hi)| (meets(lo), meets(hi))) {
            Some((true, true)) => "PASS",
            Some((false, false)) => "MISS",
            _ => "UNDECIDED (more rounds, or a quieter machine)",
        }
    }
}

/// A distribution-free confidence interval for the median of `sorted`
/// (ascending): the order statistics `[x_k, x_(n+1-k)]` with the largest `k`
/// whose coverage, `1 - 2 P(B < k)` for `B ~ Binomial(n, 1/2)`, is still at
/// least `confidence`. `None` when even `[min, max]` covers too little.
fn median_interval(sorted: &[f64], confidence: f64) -> Option<(f64, f64)> {
    let n = sorted.len();
    let tail = (1.0 - confidence) / 2.0;
    // P(B = i), in logs so that large `n` does not underflow.
    let mut log_p = -(n as f64) * std::f64::consts::LN_2;
    let mut below = 0.0; // P(B < k)
    let mut k = 0;
    while k < n / 2 {
        let next = below + log_p.exp();
        if next > tail {
            break;
        }
        below = next;
        log_p += ((n - k) as f64).ln() - ((k + 1) as f64).ln();
        k += 1;
    }
    // `k` values may lie below the interval, and `k` above it.
    (k >= 1).then(|| (sorted[k - 1], sorted[n - k]))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What h2load printed.
#[derive(Debug, Default)]
struct H2loadReport {
    req_per_s: f64,
    total: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
    status_2xx: u64,
}

impl H2loadReport {
    /// Parses the summary lines:
    ///
    /// ```text
    /// finished in 2.01s, 99502.48 req/s, 7.12MB/s
    /// requests: 200000 total, 200000 started, 200000 done, 200000 succeeded, 0 failed, 0 errored, 0 timeout
    /// status codes: 200000 2xx, 0 3xx, 0 4xx, 0 5xx
    /// ```
    fn parse(output: &str) -> anyhow::Result<Self> {
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
fn counts_by_name(text: &str) -> anyhow::Result<BTreeMap<&str, u64>> {
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

/// The bench server, killed when dropped (also when the bench fails).
struct Server {
    child: Child,
    plain: SocketAddr,
    keel: SocketAddr,
    http: SocketAddr,
}

impl Server {
    fn start(
        bin: &Path,
        handler: Handler,
        token_file: &Path,
        body_file: &Path,
        pinning: &Pinning,
        traced: Option<(f64, String)>,
        callgrind_out: Option<&Path>,
    ) -> anyhow::Result<Server> {
        ensure!(bin.exists(), "{} was not built", bin.display());
        let _ = std::fs::remove_file(token_file);
        let _ = std::fs::remove_file(body_file);
        let mut command = match callgrind_out {
            // Under callgrind every thread runs serialized: pinning is moot.
            Some(out) => {
                for dump in 1..=2 {
                    let _ = std::fs::remove_file(format!("{}.{dump}", out.display()));
                }
                let mut command = Command::new("valgrind");
                command
                    .args(["--tool=callgrind", "--dump-instr=no"])
                    .args(["--cache-sim=yes", "--branch-sim=yes"])
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(bin)
                    // A counted run lasts tens of seconds: a `date` header
                    // changing every second would make HPACK dearer as it goes.
                    .arg("--fixed-date");
                command
            }
            None => pinning.command(pinning.server_core, bin),
        };
        command
            .args(["--handler", handler.name()])
            .arg("--token-file")
            .arg(token_file)
            .arg("--body-file")
            .arg(body_file);
        if let Some((ratio, endpoint)) = traced {
            command
                .arg("--trace-sampling")
                .arg(ratio.to_string())
                .arg("--otlp-endpoint")
                .arg(endpoint);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        // From here on, dropping `server` kills the process.
        let mut server = Server {
            child,
            plain: SocketAddr::from(([0, 0, 0, 0], 0)),
            keel: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // Valgrind takes a while to start a 90 MB binary.
        let startup = Duration::from_secs(if callgrind_out.is_some() { 300 } else { 60 });
        [server.plain, server.keel, server.http] = announced_ports(
            &mut server.child,
            "bench-server",
            ["plain", "keel", "http"],
            startup,
        )?;
        println!(
            "bench-server pid {}: plain {}, keel {}, http {}",
            server.pid(),
            server.plain,
            server.keel,
            server.http
        );
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's per-mode GetUser counters (`plain_ok`, `keel_err`, …).
    fn counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let body = http_get(self.http, "/counts")?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (key, value) = line
                    .split_once(' ')
                    .with_context(|| format!("bad /counts line {line:?}"))?;
                let value = value
                    .trim()
                    .parse()
                    .with_context(|| format!("bad /counts line {line:?}"))?;
                Ok((key.to_string(), value))
            })
            .collect()
    }

    /// Keel's `grpc_server_handled_total` for GetUser with code OK.
    fn handled_ok(&self) -> anyhow::Result<u64> {
        let body = http_get(self.http, "/metrics")?;
        let mut total = 0.0;
        let mut found = false;
        for line in body.lines() {
            if line.starts_with("grpc_server_handled_total{")
                && line.contains(r#"grpc_method="GetUser""#)
                && line.contains(r#"grpc_code="OK""#)
            {
                let value = line.rsplit(' ').next().unwrap_or_default();
                total += value
                    .parse::<f64>()
                    .with_context(|| format!("bad metrics line {line:?}"))?;
                found = true;
            }
        }
        ensure!(
            found,
            "/metrics has no grpc_server_handled_total for GetUser OK"
        );
        Ok(total as u64)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bench-server --otlp-sink` for `--traced`: an OTLP trace collector that
/// counts spans, pinned to h2load's core; killed when dropped.
struct Sink {
    child: Child,
    otlp: SocketAddr,
    http: SocketAddr,
}

impl Sink {
    fn start(bin: &Path, pinning: &Pinning) -> anyhow::Result<Sink> {
        ensure!(bin.exists(), "{} was not built", bin.display());
        let mut command = pinning.command(pinning.client_core, bin);
        command
            .arg("--otlp-sink")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        // From here on, dropping `sink` kills the process.
        let mut sink = Sink {
            child,
            otlp: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        [sink.otlp, sink.http] = announced_ports(
            &mut sink.child,
            "bench-sink",
            ["otlp", "http"],
            Duration::from_secs(60),
        )?;
        println!(
            "trace sink pid {}: otlp {}, http {}",
            sink.child.id(),
            sink.otlp,
            sink.http
        );
        Ok(sink)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses of `keys`, in that order, from the line `<name> key=addr …`
/// that `child` prints on its (piped) stdout once it listens; an error if it
/// does not within `timeout`, or if the line lacks one of them.
fn announced_ports<const N: usize>(
    child: &mut Child,
    name: &str,
    keys: [&str; N],
    timeout: Duration,
) -> anyhow::Result<[SocketAddr; N]> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{name}'s stdout was not captured"))?;
    // Read its stdout on a thread, so a process that hangs cannot hang us.
    let (tx, rx) = mpsc::channel();
    let prefix = format!("{name} ");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(timeout) {
        Ok(line) => line,
        Err(_) => {
            let status = child.try_wait().ok().flatten();
            bail!(
                "{name} did not announce its ports (exit status: {})",
                status.map_or("still running".into(), |s| s.to_string())
            );
        }
    };
    let mut found = [None; N];
    for part in line.split_whitespace().skip(1) {
        let (key, value) = part
            .split_once('=')
            .with_context(|| format!("bad ports line {line:?}"))?;
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("bad address {value:?} in {line:?}"))?;
        if let Some(i) = keys.iter().position(|k| *k == key) {
            found[i] = Some(addr).filter(|a| a.port() != 0);
        }
    }
    let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); N];
    for ((addr, found), key) in addrs.iter_mut().zip(found).zip(keys) {
        *addr = found.with_context(|| format!("ports line {line:?} lacks {key}="))?;
    }
    Ok(addrs)
}

/// A minimal HTTP/1.1 GET (the server's endpoint is local and trusted).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading GET {path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: malformed response"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunked body")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

/// Which cores the server and h2load run on.
struct Pinning {
    /// Whether `taskset` pins them (needs it installed and two cores).
    enabled: bool,
    server_core: usize,
    client_core: usize,
}

impl Pinning {
    fn detect() -> Self {
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

    fn command(&self, core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.enabled {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

fn print_machine(pinning: &Pinning) {
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
fn cpu_time_ns(pid: u32) -> anyhow::Result<u64> {
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
fn children_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: field 3 (state) is index 0.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// Busy and steal time of one core, in clock ticks (`/proc/stat`).
struct CoreTimes {
    busy: u64,
    steal: u64,
}

fn core_times(core: usize) -> Option<CoreTimes> {
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

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn ensure_h2load() -> anyhow::Result<()> {
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
        super::run_cmd(Command::new("apt-get").args(["update"]))
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

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").expect("dechunks"),
            "hello world"
        );
    }

    #[test]
    fn median_intervals_are_the_order_statistics_of_95_percent_coverage() {
        let values: Vec<f64> = (1..=31).map(f64::from).collect();
        // P(B <= 9) = 0.0147 and P(B <= 10) = 0.0354 for B ~ Binomial(31, 1/2).
        assert_eq!(median_interval(&values, 0.95), Some((10.0, 22.0)));
        // The default 61 rounds: the 23rd to the 39th.
        let values: Vec<f64> = (1..=61).map(f64::from).collect();
        assert_eq!(median_interval(&values, 0.95), Some((23.0, 39.0)));
        // Six values: [min, max] covers 1 - 2/64 = 96.9%; five: only 93.8%.
        assert_eq!(median_interval(&values[..6], 0.95), Some((1.0, 6.0)));
        assert_eq!(median_interval(&values[..5], 0.95), None);
        assert_eq!(median_interval(&[], 0.95), None);
        // Large n: no underflow, and the interval narrows around the median.
        let many: Vec<f64> = (1..=2001).map(f64::from).collect();
        let (lo, hi) = median_interval(&many, 0.95).expect("an interval");
        assert!(
            (955.0..=960.0).contains(&lo) && hi == 2002.0 - lo,
            "{lo} {hi}"
        );
    }

    #[test]
    fn a_verdict_needs_the_whole_interval_on_one_side() {
        let paired = |values: &[f64]| Paired::of(values.iter().copied());
        let meets = |x: f64| x >= 0.95;
        assert_eq!(
            paired(&[0.96, 0.97, 0.98, 0.99, 1.0, 1.01]).verdict(meets),
            "PASS"
        );
        assert_eq!(
            paired(&[0.90, 0.91, 0.92, 0.93, 0.94, 0.941]).verdict(meets),
            "MISS"
        );
        assert!(
            paired(&[0.90, 0.97, 0.98, 0.99, 1.0, 1.01])
                .verdict(meets)
                .starts_with("UNDECIDED")
        );
        // Fewer than 6 rounds tell nothing, however good they look.
        assert!(
            paired(&[1.0, 1.0, 1.0])
                .verdict(meets)
                .starts_with("UNDECIDED")
        );
    }

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

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
