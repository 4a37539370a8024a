//! `cargo xtask run`: the README's main job. Builds the example services and
//! runs them together on their embedded defaults until Ctrl-C (which reaches
//! every service: each shuts down gracefully) or until one of them fails.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The services, in start order (the auth service first: the others verify its tokens).
const SERVICES: &[&str] = &["auth-service", "user-service", "gateway-service"];

pub fn run(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("run takes no arguments; configure the services with KEEL_* variables");
    }
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--locked"]);
    for service in SERVICES {
        build.args(["-p", service]);
    }
    crate::run_cmd(&mut build)?;

    let bin = crate::target_dir().join("debug");
    let mut children = Children(Vec::new());
    for service in SERVICES {
        let child = Command::new(bin.join(service))
            .current_dir(crate::root())
            .spawn()
            .with_context(|| format!("starting {service}"))?;
        children.0.push((*service, child));
    }
    println!(
        "xtask: running {}; Ctrl-C stops them all (auth :50053, users :50051, gateway :50052)",
        SERVICES.join(", ")
    );
    loop {
        for (service, child) in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    println!("xtask: {service} stopped");
                    return Ok(());
                }
                bail!("{service} exited with {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills whatever is still running when `run` returns early.
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
