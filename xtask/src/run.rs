//! `cargo xtask run`: the README's main job. Builds the example services and
//! runs them together on their embedded defaults, in development
//! (`KEEL_SERVICE__ENVIRONMENT=development`: their development credentials
//! are layered in), until Ctrl-C, SIGINT or SIGTERM, or until one of them ends.
//!
//! The services run in their own process group, so a terminal's Ctrl-C
//! reaches only this process, which passes one SIGTERM to each service: each
//! shuts down gracefully (lame duck, then drain) and `run` waits for all of
//! them. A second signal is passed on too, and the services then exit at
//! once. The same holds under a supervisor that signals only this process.
//! When one service ends by itself, the others are stopped the same way.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The services, in start order (the auth service first: the others verify its tokens).
const SERVICES: &[&str] = &["auth-service", "user-service", "gateway-service"];

/// How often the services are checked on.
const POLL: Duration = Duration::from_millis(50);

pub fn run(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("run takes no arguments; configure the services with KEEL_* variables");
    }
    // One build per service, as `cargo run -p <service>` builds it: built
    // together, cargo unifies their features (the gateway's keel-rpc would
    // get user-service's `store`), and the reader's next `cargo run -p
    // gateway-service` would rebuild.
    for service in SERVICES {
        crate::run_cmd(Command::new(env!("CARGO")).args(["build", "--locked", "-p", service]))?;
    }

    // Registered before the services start, so no signal is missed.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("handling SIGINT/SIGTERM")?;
    let bin = crate::target_dir().join("debug");
    let commands = SERVICES.iter().map(|service| {
        let mut command = Command::new(bin.join(service));
        command
            .current_dir(crate::root())
            .env("KEEL_SERVICE__ENVIRONMENT", "development");
        (*service, command)
    });
    let children = Children::spawn(commands)?;
    println!(
        "xtask: running {} in development; Ctrl-C stops them all (auth :50053, users :50051, \
         gateway :50052)",
        SERVICES.join(", ")
    );
    supervise(children, || signals.pending().count() > 0)
}

/// Waits for every child to exit. When `signalled` says a signal came, or
/// when a child exits while the others run, the running ones are sent
/// SIGTERM (again on every further signal). Fails if a child failed.
fn supervise(mut children: Children, mut signalled: impl FnMut() -> bool) -> Result<()> {
    let mut stopping = false;
    let mut failed = Vec::new();
    loop {
        let mut stop = signalled();
        if stop && stopping {
            println!("xtask: signalled again: the services exit at once");
        }
        let mut running = 0;
        for (name, child, exited) in &mut children.0 {
            if exited.is_some() {
                continue;
            }
            match child
                .try_wait()
                .with_context(|| format!("waiting for {name}"))?
            {
                None => running += 1,
                Some(status) => {
                    println!("xtask: {name} exited ({status})");
                    if !status.success() {
                        failed.push(format!("{name} exited with {status}"));
                    }
                    *exited = Some(status);
                    stop |= !stopping;
                }
            }
        }
        if running == 0 {
            break;
        }
        if stop {
            stopping = true;
            children.terminate();
        }
        std::thread::sleep(POLL);
    }
    // Dropped with every child reaped: nothing left to kill.
    drop(children);
    match failed.is_empty() {
        true => Ok(()),
        false => bail!("{}", failed.join("; ")),
    }
}

/// The services, each in a process group of its own; whatever still runs when
/// this is dropped (`run` returning early) is killed.
struct Children(Vec<(&'static str, Child, Option<ExitStatus>)>);

impl Children {
    fn spawn(commands: impl IntoIterator<Item = (&'static str, Command)>) -> Result<Self> {
        let mut children = Children(Vec::new());
        for (name, mut command) in commands {
            // Out of the terminal's process group: Ctrl-C reaches `run` only,
            // which passes on exactly one signal per Ctrl-C.
            let child = command
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            children.0.push((name, child, None));
        }
        Ok(children)
    }

    /// Sends SIGTERM to every child still running.
    fn terminate(&self) {
        for (name, child, exited) in &self.0 {
            if exited.is_none() {
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                if !sent.is_ok_and(|s| s.success()) {
                    eprintln!("xtask: could not signal {name} (pid {})", child.id());
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that exits 0 when it gets SIGTERM, after writing `term` into
    /// `dir/name`; or after `after` seconds with `code`.
    fn child(
        dir: &std::path::Path,
        name: &'static str,
        after: u32,
        code: i32,
    ) -> (&'static str, Command) {
        let mut command = Command::new("sh");
        let file = dir.join(name);
        command.arg("-c").arg(format!(
            "trap 'echo term > {file}; exit 0' TERM; i=0; while [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; exit {code}",
            file = file.display(),
            ticks = after * 10,
        ));
        (name, command)
    }

    fn scratch(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-run-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn got_term(dir: &std::path::Path, name: &str) -> bool {
        std::fs::read_to_string(dir.join(name)).is_ok_and(|s| s.trim() == "term")
    }

    #[test]
    fn a_signal_is_passed_to_every_service_and_all_are_waited_for() {
        let dir = scratch("signal");
        let children = Children::spawn([child(&dir, "a", 30, 0), child(&dir, "b", 30, 0)]).unwrap();
        let pids: Vec<u32> = children.0.iter().map(|(_, c, _)| c.id()).collect();
        // Let the shells install their traps, then "signal" once.
        let mut polls = 0;
        let started = std::time::Instant::now();
        supervise(children, || {
            polls += 1;
            polls == 10
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "did not stop");
        assert!(
            got_term(&dir, "a") && got_term(&dir, "b"),
            "both got SIGTERM"
        );
        for pid in pids {
            let alive = Command::new("kill")
                .args(["-0", &pid.to_string()])
                .status()
                .unwrap();
            assert!(!alive.success(), "pid {pid} still running");
        }
    }

    #[test]
    fn one_service_failing_stops_the_others_and_fails() {
        let dir = scratch("failing");
        let children =
            Children::spawn([child(&dir, "ok", 30, 0), child(&dir, "bad", 1, 3)]).unwrap();
        let error = supervise(children, || false).unwrap_err().to_string();
        assert!(error.contains("bad exited with exit status: 3"), "{error}");
        assert!(
            got_term(&dir, "ok"),
            "the other service was stopped with SIGTERM"
        );
        assert!(!got_term(&dir, "bad"));
    }
}
