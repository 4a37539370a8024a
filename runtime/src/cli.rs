//! The command line every Keel service shares: `serve` (the default),
//! `print-config`, `probe`, `mint-token` and `--config FILE`, with room for
//! the service's own subcommands.
//!
//! A service's `main` parses it, hands it the configuration layers, and is
//! left with what only the service knows: how to serve, and its own commands.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! use keel_rpc::cli::{Action, Cli};
//! # mod my { pub static SERVICES: &[&keel_rpc::codegen::ServicePolicy] = &[];
//! #   pub fn loader(file: Option<&std::path::Path>) -> keel_rpc::config::Loader {
//! #       keel_rpc::config::Loader::service("", "", file) } }
//!
//! /// The service's own subcommands, beside Keel's.
//! #[derive(Debug, clap::Subcommand)]
//! enum Tools {
//!     /// Say hello.
//!     Hello,
//! }
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     keel_rpc::cli::exit(run().await)
//! }
//!
//! async fn run() -> anyhow::Result<()> {
//!     let cli: Cli<Tools> = Cli::parse::<()>(keel_rpc::cli::program!());
//!     let loader = my::loader(cli.config_file());
//!     match cli.run::<()>(&loader, my::SERVICES).await? {
//!         Action::Serve(config) => {
//!             let keel = keel_rpc::Keel::new(&config, my::SERVICES)?;
//!             keel.server(&config).serve().await?;
//!         }
//!         Action::Service(Tools::Hello) => println!("hello"),
//!         Action::Done => {}
//!     }
//!     Ok(())
//! }
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::codegen::{Access, ServicePolicy};
use crate::config::{Config, ConfigError, Loader, Section};

/// The parsed command line of a Keel service whose own subcommands are `C`
/// ([`NoCommands`] for none).
#[derive(Debug, Parser)]
pub struct Cli<C: Subcommand = NoCommands> {
    /// TOML file layered over the embedded defaults (KEEL_* variables override both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command<C>>,
}

/// Keel's subcommands, then the service's.
#[derive(Debug, Subcommand)]
enum Command<C: Subcommand> {
    /// Serve (the default).
    Serve,
    /// Print the effective configuration, secrets redacted (`--help` lists every key).
    PrintConfig,
    /// Exit 0 when the local server reports SERVING on the standard health
    /// service (for container health checks).
    Probe {
        /// Service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Print an access token signed with the configured HMAC secret (development only).
    MintToken(MintToken),
    #[command(flatten)]
    Service(C),
}

#[derive(Debug, Args)]
struct MintToken {
    /// Subject of the token.
    #[arg(long, default_value = "dev-user")]
    sub: String,
    /// Scope to grant; repeat for several [default: every scope the service's methods require].
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Lifetime, like `15m` or `1h`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

/// Who the command line belongs to: [`program!`] fills it in from the
/// calling crate's `Cargo.toml`.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// The binary's name.
    pub name: &'static str,
    /// What `--version` prints.
    pub version: &'static str,
    /// What `--help` says first (empty: nothing).
    pub about: &'static str,
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cli_program {
    () => {
        $crate::cli::Program {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            about: env!("CARGO_PKG_DESCRIPTION"),
        }
    };
}

/// The calling crate's [`Program`]: its package name, version and description.
///
/// ```
/// let program = keel_rpc::cli::program!();
/// assert_eq!(program.name, "keel-rpc");
/// ```
#[doc(inline)]
pub use crate::__cli_program as program;

/// For a service with no subcommands of its own.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum NoCommands {}

/// What is left to the service once [`Cli::run`] has run Keel's commands.
#[derive(Debug)]
// Made once per process: boxing the configuration would only make users
// unbox it.
#[allow(clippy::large_enum_variant)]
pub enum Action<App, C> {
    /// `serve` (or no subcommand): serve with this configuration.
    Serve(Config<App>),
    /// One of the service's own subcommands.
    Service(C),
    /// A Keel command ran (`print-config`, `probe`, `mint-token`); exit.
    Done,
}

/// Why a Keel command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `probe` found the server not serving (or not there).
    #[error(transparent)]
    Probe(crate::Error),
    /// `mint-token` outside development.
    #[error(
        "mint-token is for development (service.environment = \"development\"); in production \
         tokens come from your issuer"
    )]
    NotDevelopment,
    /// `mint-token` could not sign.
    #[error(transparent)]
    Mint(#[from] crate::auth::IssueError),
}

impl<C: Subcommand> Cli<C> {
    /// The command line of `program` (`keel_rpc::cli::program!()`: the
    /// calling crate's name, version and description), for changes before
    /// parsing; `print-config --help` ends with the reference of every key
    /// of a `Config<App>`.
    pub fn command<App: Section>(program: Program) -> clap::Command {
        let command = <Self as CommandFactory>::command()
            .name(program.name)
            .bin_name(program.name)
            .version(program.version)
            .mut_subcommand("print-config", |c| {
                c.after_long_help(Config::<App>::reference())
            });
        match program.about {
            "" => command,
            about => command.about(about),
        }
    }

    /// Parses the process's arguments (see [`Cli::command`]); on a usage
    /// error, or `--help`, prints and exits as clap does.
    pub fn parse<App: Section>(program: Program) -> Self {
        let matches = Self::command::<App>(program).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The `--config` file, to build the service's [`Loader`] with.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Runs Keel's commands with the configuration `loader` reads (a
    /// `Config<App>`); `services` are the policies served, whose scopes
    /// `mint-token` grants by default. Returns what is left to the service.
    pub async fn run<App: Section>(
        self,
        loader: &Loader,
        services: &[&ServicePolicy],
    ) -> Result<Action<App, C>, CliError> {
        let load = || Config::<App>::from_loader(loader);
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => return Ok(Action::Serve(load()?)),
            Command::Service(command) => return Ok(Action::Service(command)),
            Command::PrintConfig => print!("{}", load()?.to_toml_redacted()),
            Command::Probe { service } => crate::serve::probe_local(&load()?, &service)
                .await
                .map_err(CliError::Probe)?,
            Command::MintToken(mint) => println!("{}", mint.token(&load()?, services)?),
        }
        Ok(Action::Done)
    }
}

impl MintToken {
    fn token<App>(
        self,
        config: &Config<App>,
        services: &[&ServicePolicy],
    ) -> Result<String, CliError> {
        if !config.service.environment.is_development() {
            return Err(CliError::NotDevelopment);
        }
        let scopes: Vec<&str> = if self.scopes.is_empty() {
            required_scopes(services).into_iter().collect()
        } else {
            self.scopes.iter().map(String::as_str).collect()
        };
        Ok(crate::auth::mint_access_token(
            &config.auth,
            &self.sub,
            &scopes,
            self.ttl,
        )?)
    }
}

/// Every scope a method of `services` requires, each once.
fn required_scopes(services: &[&ServicePolicy]) -> BTreeSet<&'static str> {
    let methods = services.iter().flat_map(|service| service.methods);
    methods
        .flat_map(|method| match method.access {
            Access::Public => &[][..],
            Access::Token { scopes } => scopes,
            Access::Peer { scopes, .. } => scopes.unwrap_or(&[]),
        })
        .copied()
        .collect()
}

/// The exit of a service's `main`: prints an error as `error: ` and its
/// chain of causes on one line, a failed call as `NotFound: no user u-1`,
/// without the `Debug` form (and the backtrace under `RUST_BACKTRACE=1`) that
/// returning it from `main` prints.
///
/// ```
/// # fn run() -> Result<(), std::io::Error> { Ok(()) }
/// fn main() -> std::process::ExitCode {
///     keel_rpc::cli::exit(run())
/// }
/// ```
pub fn exit<E: Into<anyhow::Error>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain(&error.into()));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes, joined by `: ` as anyhow's `{:#}` does; a
/// `Status` ends the chain as its code and message (its `Display` spells
/// the code's description and quotes the message).
fn chain(error: &anyhow::Error) -> String {
    let mut shown = Vec::new();
    for cause in error.chain() {
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            shown.push(format!("{:?}: {}", status.code(), status.message()));
            break;
        }
        shown.push(cause.to_string());
    }
    shown.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Subcommand, PartialEq)]
    enum Tools {
        /// Call a running instance.
        Call { id: String },
    }

    const PROGRAM: Program = Program {
        name: "svc",
        version: "1.2.3",
        about: "A service.",
    };

    fn parse(args: &[&str]) -> Result<Cli<Tools>, clap::Error> {
        let matches = Cli::<Tools>::command::<()>(PROGRAM).try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn keel_commands_sit_beside_the_services() {
        let cli = parse(&["svc", "--config", "a.toml", "call", "7"]).expect("parses");
        assert_eq!(cli.config_file(), Some(Path::new("a.toml")));
        assert!(matches!(cli.command, Some(Command::Service(Tools::Call { ref id })) if id == "7"));
        let cli = parse(&[
            "svc",
            "mint-token",
            "--scope",
            "a",
            "--scope",
            "b",
            "--ttl",
            "5m",
        ])
        .expect("parses");
        let Some(Command::MintToken(mint)) = cli.command else {
            panic!("not mint-token: {cli:?}");
        };
        assert_eq!(
            (mint.scopes, mint.ttl),
            (
                vec!["a".to_owned(), "b".to_owned()],
                Duration::from_secs(300)
            )
        );
        assert!(parse(&["svc"]).expect("parses").command.is_none());
    }

    #[test]
    fn the_version_and_the_reference_are_the_services() {
        let mut command = Cli::<Tools>::command::<()>(PROGRAM);
        assert_eq!(command.render_version(), "svc 1.2.3\n");
        let help = command
            .find_subcommand_mut("print-config")
            .expect("print-config")
            .render_long_help()
            .to_string();
        assert!(help.contains("server.addr"), "{help}");
    }

    #[test]
    fn a_failed_call_reads_as_its_code_and_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("getting the profile")]
        struct Context(#[source] tonic::Status);
        let failed = Context(tonic::Status::not_found("no user u-1"));
        assert_eq!(
            chain(&failed.into()),
            "getting the profile: NotFound: no user u-1"
        );
        let failed = anyhow::Error::from(tonic::Status::unauthenticated("missing bearer token"));
        assert_eq!(chain(&failed), "Unauthenticated: missing bearer token");
        let failed = failed.context("calling GetUser");
        assert_eq!(
            chain(&failed),
            "calling GetUser: Unauthenticated: missing bearer token"
        );
    }

    #[test]
    fn mint_token_grants_what_the_methods_require() {
        use crate::codegen::{MethodKind, MethodPolicy};
        const fn method(access: Access) -> MethodPolicy {
            MethodPolicy::new("M", "/s.S/M", MethodKind::Unary, access)
        }
        static METHODS: [MethodPolicy; 3] = [
            method(Access::Public),
            method(Access::Token {
                scopes: &["b:write", "a:read"],
            }),
            method(Access::Peer {
                peers: &["spiffe://x"],
                scopes: Some(&["a:read", "c"]),
            }),
        ];
        static SERVICE: ServicePolicy = ServicePolicy {
            name: "s.S",
            methods: &METHODS,
            route: |_| None,
        };
        assert_eq!(
            required_scopes(&[&SERVICE]).into_iter().collect::<Vec<_>>(),
            ["a:read", "b:write", "c"]
        );
    }

    #[tokio::test]
    async fn mint_token_is_refused_in_production() {
        let cli = parse(&["svc", "mint-token"]).expect("parses");
        let loader = Loader::new()
            .defaults_toml("[auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef\"\n")
            .env_from(Vec::<(String, String)>::new());
        let refused = cli.run::<()>(&loader, &[]).await.expect_err("refused");
        assert!(matches!(refused, CliError::NotDevelopment), "{refused}");
    }
}
