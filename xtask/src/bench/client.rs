//! `--client`: what a call costs the calling process, counted by callgrind
//! in `bench-client` (`bench/src/bin/bench-client.rs`) for a plain tonic
//! `Channel`, Keel's client layer over one channel, and that layer over a
//! balanced list of one replica.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, ensure};

use super::callgrind::Counted;
use super::machine::{Pinning, print_machine};
use super::server::Server;
use super::{Handler, Options, user_id};

/// Target: a balanced Keel client over one replica costs at most this
/// multiple of a plain tonic `Channel`'s client-side instructions per call
/// (issue 31).
const TARGET_BALANCED: f64 = 1.05;

/// The function of bench-client whose calls callgrind counts: collection
/// is on from its entry to its exit (its name is bench-client's
/// `measured_calls`, demangled `bench_client::measured_calls`).
const TOGGLE: &str = "*measured_calls*";

/// The client bench-client calls through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientMode {
    Plain,
    Keel,
    Balanced,
}

impl ClientMode {
    const ALL: [ClientMode; 3] = [ClientMode::Plain, ClientMode::Keel, ClientMode::Balanced];

    fn name(self) -> &'static str {
        match self {
            ClientMode::Plain => "plain",
            ClientMode::Keel => "keel",
            ClientMode::Balanced => "balanced",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ClientMode::Plain => "UserServiceClient over a tonic Channel (Endpoint::connect)",
            ClientMode::Keel => {
                "over client.wrap(&USER_SERVICE_POLICY, client.connect(url)): Keel's layer, one channel"
            }
            ClientMode::Balanced => {
                "over client.wrap(&USER_SERVICE_POLICY, client.balance(name, [endpoint])): p2c over one replica"
            }
        }
    }
}

/// `cargo xtask bench --client`: builds bench-server and bench-client,
/// starts one plain bench-server (pinned to the server's core, not counted),
/// then per client mode runs bench-client under callgrind (pinned to the
/// other core) and prints the per-call counts, the ratios and the verdict.
pub(super) fn run(options: &Options, cargo: &str) -> anyhow::Result<()> {
    super::build(cargo, &["bench-server", "bench-client"])?;
    crate::ensure_tool("valgrind", "valgrind")?;

    let target = crate::target_dir();
    let release = target.join("release");
    let (server_bin, client_bin) = (release.join("bench-server"), release.join("bench-client"));
    ensure!(
        client_bin.exists(),
        "{} was not built",
        client_bin.display()
    );
    let work = target.join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let pinning = Pinning::detect();
    print_machine(&pinning);
    let server = Server::start_for_client(&server_bin, Handler::Fixed, &work, &pinning)?;
    let id = user_id(&server.body)?;
    let (calls, warmup) = (options.requests, options.warmup_requests);
    println!(
        "\n== client: GetUser of user {id} from bench-client (tokio current_thread runtime, one \
         call at a time), {warmup} warm-up calls then {calls} counted ones per mode; the server \
         is plain tonic, `--handler fixed`, on core {} and not counted",
        pinning.server_core
    );
    for mode in ClientMode::ALL {
        println!("  {:<9} {}", mode.name(), mode.describe());
    }

    let mut counted = Vec::new();
    for mode in ClientMode::ALL {
        let out = work.join(format!("callgrind-client-{}.out", mode.name()));
        let before = server.counts()?;
        let run = count_client(&ClientRun {
            bin: &client_bin,
            mode,
            target: &format!("http://{}", server.grpc),
            id: &id,
            token: &server.token,
            calls,
            warmup,
            out: &out,
            pinning: &pinning,
        })?;
        let after = server.counts()?;
        // Every call bench-client made, warm-up included, answered OK by the handler.
        let delta = |key: &str| {
            let get = |counts: &std::collections::BTreeMap<String, u64>| {
                counts.get(key).copied().unwrap_or(0)
            };
            get(&after).saturating_sub(get(&before))
        };
        ensure!(
            delta("ok") == calls + warmup && delta("err") == 0,
            "{}: bench-client made {} calls, the server answered {} OK and {} with an error",
            mode.name(),
            calls + warmup,
            delta("ok"),
            delta("err")
        );
        println!(
            "counted {} ({calls} calls): {} instructions",
            mode.name(),
            run.sum(Counted::INSTRUCTIONS)
        );
        counted.push(run);
    }
    drop(server);
    print_client(&counted, calls);
    Ok(())
}

/// One counted run of bench-client.
struct ClientRun<'a> {
    bin: &'a Path,
    mode: ClientMode,
    target: &'a str,
    id: &'a str,
    token: &'a str,
    calls: u64,
    warmup: u64,
    out: &'a Path,
    pinning: &'a Pinning,
}

/// Runs bench-client under callgrind, collecting only inside its
/// `measured_calls` (so neither the start, the connection nor the warm-up
/// counts), and reads the dump it writes at exit.
fn count_client(run: &ClientRun) -> anyhow::Result<Counted> {
    let _ = std::fs::remove_file(run.out);
    let mut command = run.pinning.command(run.pinning.client_core, "valgrind");
    command
        .args(["--tool=callgrind", "--dump-instr=no"])
        .args(["--cache-sim=yes", "--branch-sim=yes"])
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={TOGGLE}"))
        .arg(format!("--callgrind-out-file={}", run.out.display()))
        .arg(run.bin)
        .args(["--target", run.target])
        .args(["--mode", run.mode.name()])
        .args(["--calls", &run.calls.to_string()])
        .args(["--warmup", &run.warmup.to_string()])
        .args(["--user-id", run.id])
        .args(["--token", run.token])
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "bench-client --mode {} failed ({}):\n{stdout}{}",
        run.mode.name(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!(
        "bench-client mode={} calls={} failed=0",
        run.mode.name(),
        run.calls
    );
    ensure!(
        stdout.lines().any(|l| l.trim() == expected),
        "bench-client did not report {expected:?}:\n{stdout}"
    );
    let text = std::fs::read_to_string(run.out)
        .with_context(|| format!("reading {}", run.out.display()))?;
    let counted =
        Counted::parse(&text).with_context(|| format!("reading {}", run.out.display()))?;
    // A pattern that matched nothing would count nothing, not fail.
    ensure!(
        counted.sum(Counted::INSTRUCTIONS) > 0.0,
        "callgrind counted nothing in {}: --toggle-collect={TOGGLE} matched no function",
        run.out.display()
    );
    Ok(counted)
}

/// Prints the per-call figures of the three modes, their ratios and the
/// verdict of balanced/plain.
fn print_client(counted: &[Counted], calls: u64) {
    let [plain, keel, balanced] = counted else {
        return;
    };
    let per_call = |total: f64| total / calls as f64;
    println!(
        "\nper call (callgrind with its simulated caches and branch predictor; user space, the \
         client thread, inside measured_calls; {calls} calls per mode):"
    );
    let mut heading = format!("{:<15}", "");
    for (name, _) in Counted::COLUMNS {
        heading += &format!("{name:>11}");
    }
    println!("{heading}{:>13}", "est. cycles");
    for (mode, c) in ClientMode::ALL.iter().zip([plain, keel, balanced]) {
        let mut row = format!("{:<15}", mode.name());
        for (_, events) in Counted::COLUMNS {
            row += &format!("{:>11.0}", per_call(c.sum(events)));
        }
        println!("{row}{:>13.0}", per_call(c.cycles()));
    }
    for (label, a, b) in [
        ("keel/plain", keel, plain),
        ("balanced/plain", balanced, plain),
        ("balanced/keel", balanced, keel),
    ] {
        let mut row = format!("{label:<15}");
        for (_, events) in Counted::COLUMNS {
            let (x, y) = (a.sum(events), b.sum(events));
            // Under one event per call (last-level misses, once warm): no ratio worth printing.
            row += &match per_call(y) >= 1.0 {
                true => format!("{:>10.3}x", x / y),
                false => format!("{:>11}", "-"),
            };
        }
        println!("{row}{:>12.3}x", a.cycles() / b.cycles());
    }
    let instructions = |c: &Counted| per_call(c.sum(Counted::INSTRUCTIONS));
    println!(
        "keel-plain {:+.0}, balanced-keel {:+.0}, balanced-plain {:+.0} instructions per call",
        instructions(keel) - instructions(plain),
        instructions(balanced) - instructions(keel),
        instructions(balanced) - instructions(plain),
    );
    let ratio = instructions(balanced) / instructions(plain);
    let verdict = if ratio <= TARGET_BALANCED {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "balanced/plain instructions per call: {ratio:.3}x   target <= {TARGET_BALANCED}x: \
         {verdict}"
    );
    println!(
        "(keel/plain {:.3}x, balanced/keel {:.3}x; est. cycles = instr. + 10 x (L1 misses + \
         mispredictions) + 100 x LL misses, KCachegrind's estimate; kernel time not included)",
        instructions(keel) / instructions(plain),
        instructions(balanced) / instructions(keel),
    );
}
