//! [`Section`]: a configuration section, declared once as an annotated
//! struct (`#[derive(Section)]`), and what the derive's code works with:
//! the key table ([`Key`]), the [`Decoder`](super::Decoder) and
//! [`Problems`].

use std::fmt;

use super::Config;

/// A section of the configuration: a struct whose fields are its keys.
/// Derive it (`#[derive(Section)]`, see [`keel_rpc_macros`]) rather than
/// implementing it: the derive writes its [`Default`], its key table, the
/// decoding of each key on its own (every bad key is reported, with its
/// value and where it came from), the bounds checks and its redacted TOML.
///
/// A service's own sections go beside Keel's in [`Config<App>`](Config):
///
/// ```
/// use std::time::Duration;
/// use keel_rpc::config::{Config, Loader, Section};
///
/// /// `[upstream]`: where the service's dependencies are.
/// #[derive(Clone, Debug, Section)]
/// pub struct Upstream {
///     /// URL of the user service.
///     #[config(default = "http://127.0.0.1:50051")]
///     pub user_service: String,
///     /// How long a call to it may take.
///     #[config(default = "2s", above = "0s", max = "1m")]
///     pub timeout: Duration,
/// }
///
/// /// The service's own sections.
/// #[derive(Clone, Debug, Section)]
/// pub struct App {
///     #[config(section)]
///     pub upstream: Upstream,
/// }
///
/// let config = Config::<App>::from_loader(
///     &Loader::new()
///         .defaults_toml("[auth]\nhmac_secret = \"an-example-secret-of-at-least-32-bytes\"")
///         .env_from([("KEEL_UPSTREAM__TIMEOUT", "500ms")]),
/// )?;
/// assert_eq!(config.app.upstream.timeout, Duration::from_millis(500));
///
/// // Every problem at once, Keel's and the service's, each with its key,
/// // value and source.
/// let error = Config::<App>::from_loader(&Loader::new().env_from([
///     ("KEEL_UPSTREAM__TIMEOUT", "5m"),
///     ("KEEL_SERVER__MAX_CONNECTIONS", "0"),
/// ]))
/// .unwrap_err();
/// let problems = error.problems().join("\n");
/// assert!(problems.contains(
///     "upstream.timeout: 5m is out of range; more than 0s, at most 1m \
///      (from environment variable KEEL_UPSTREAM__TIMEOUT)"
/// ));
/// assert!(problems.contains("server.max_connections: 0 is out of range; at least 1"));
/// # Ok::<(), keel_rpc::config::ConfigError>(())
/// ```
pub trait Section: Default + Sized {
    /// Its keys, in declaration order.
    const KEYS: &'static [Key];

    /// Decodes the keys of the table at `path` (`""`: the top level),
    /// reporting each problem to `decoder`; a key absent or bad keeps its
    /// default. Written by the derive.
    #[doc(hidden)]
    fn decode_fields(decoder: &mut super::Decoder<'_>, path: &str) -> Self;

    /// The bounds of its keys, its nested sections' checks, and its own
    /// rules between keys (`#[config(validate = …)]`). Written by the derive.
    #[doc(hidden)]
    fn check(&self, problems: &mut Problems<'_>);

    /// The section as TOML, secrets redacted. Written by the derive.
    #[doc(hidden)]
    fn to_toml(&self) -> toml::Table;

    /// Rules between this section, as a service's `App`, and Keel's
    /// sections (an auth service needs `auth.issuer`): none unless given.
    fn check_in(config: &Config<Self>, problems: &mut Problems<'_>) {
        let _ = (config, problems);
    }
}

/// No sections of the service's own: `Config<()>` is Keel's alone.
impl Section for () {
    const KEYS: &'static [Key] = &[];

    fn decode_fields(_: &mut super::Decoder<'_>, _: &str) -> Self {}

    fn check(&self, _: &mut Problems<'_>) {}

    fn to_toml(&self) -> toml::Table {
        toml::Table::new()
    }
}

/// One key of a section, as the derive found it.
#[derive(Debug)]
pub struct Key {
    /// Its name in its table.
    pub name: &'static str,
    /// The field's doc comment, on one line.
    pub doc: &'static str,
    /// The default as the reference shows it (`"5s"`, `4096`, `none`).
    pub default: &'static str,
    /// Its bounds in words (`between 1024 and 1073741824`), or empty.
    pub bounds: &'static str,
    /// How the environment sets it.
    pub env: Env,
    /// Whether environment values are taken as text, never as numbers
    /// (`KEEL_SERVICE__NAME=123` is the name "123").
    pub text: bool,
    /// Whether its value is never shown (in errors, `print-config`).
    pub secret: bool,
    /// Whether a table that has this section must have this key.
    pub required: bool,
    /// Whether it is a table of keys of its own.
    pub nested: Nested,
}

/// How the environment sets a key, for the reference.
#[derive(Debug, Clone, Copy)]
pub enum Env {
    /// Its `KEEL_…` variable.
    Variable,
    /// Only a file can (an array of tables).
    File,
    /// As this text says (`KEEL_TELEMETRY__RESOURCE__<NAME>`).
    Shown(&'static str),
}

/// Whether a key is a table of keys.
#[derive(Debug, Clone, Copy)]
pub enum Nested {
    /// A value.
    No,
    /// A nested table (`[server.tls]`); `optional` ones are absent unless
    /// given.
    Table {
        /// Its keys.
        keys: &'static [Key],
        /// Whether it is an `Option`.
        optional: bool,
    },
    /// Keys of this level declared elsewhere (a service's `App`).
    Flatten(&'static [Key]),
}

/// Every key of `keys` at this level, flattened ones included.
pub(crate) fn level(keys: &'static [Key]) -> Vec<&'static Key> {
    keys.iter()
        .flat_map(|key| match key.nested {
            Nested::Flatten(inner) => level(inner),
            _ => vec![key],
        })
        .collect()
}

/// The key at the dotted `path` of `keys`, if it is one.
pub(crate) fn find(keys: &'static [Key], path: &str) -> Option<&'static Key> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    let key = level(keys).into_iter().find(|k| k.name == first)?;
    match (rest, key.nested) {
        (None, _) => Some(key),
        (Some(rest), Nested::Table { keys, .. }) => find(keys, rest),
        (Some(_), _) => None,
    }
}

/// `path.name`, or `name` at the top level.
pub(crate) fn join(path: &str, name: &str) -> String {
    match path {
        "" => name.to_owned(),
        path => format!("{path}.{name}"),
    }
}

/// A semantic problem; displays as `key: message`.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub key: String,
    message: String,
    /// Other keys the check read (besides `key`): when one of them failed
    /// to decode, the check ran on a default and its verdict is meaningless.
    depends: Vec<String>,
}

impl Problem {
    /// Every key the check read.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::once(self.key.as_str()).chain(self.depends.iter().map(String::as_str))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Where a section's checks report what is wrong, by key relative to the
/// section (`client_auth` in `[server.tls]` is `server.tls.client_auth`).
pub struct Problems<'a> {
    path: String,
    found: &'a mut Vec<Problem>,
}

impl fmt::Debug for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problems")
            .field("path", &self.path)
            .field("found", &self.found.len())
            .finish()
    }
}

impl<'a> Problems<'a> {
    pub(crate) fn new(found: &'a mut Vec<Problem>) -> Self {
        Problems {
            path: String::new(),
            found,
        }
    }

    /// The problems of the nested section `name`.
    pub fn at(&mut self, name: &str) -> Problems<'_> {
        Problems {
            path: join(&self.path, name),
            found: self.found,
        }
    }

    /// The full key of `name` (`server.tls.client_ca_file`), for messages
    /// that name another key.
    pub fn key(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Reports `message` about the key `name`.
    pub fn push(&mut self, name: &str, message: impl Into<String>) {
        self.push_reading(name, message, &[]);
    }

    /// Reports `message` about `name`, found by reading the keys `read`
    /// too: when one of those did not decode, the check is not reported
    /// (it ran on a default).
    pub fn push_reading(&mut self, name: &str, message: impl Into<String>, read: &[&str]) {
        self.found.push(Problem {
            key: self.key(name),
            message: message.into(),
            depends: read.iter().map(|r| self.key(r)).collect(),
        });
    }

    /// `shown` is outside the bounds of `key`. Called by the derive.
    #[doc(hidden)]
    pub fn out_of_range(&mut self, key: &Key, shown: String) {
        self.push(key.name, format!("{shown} is out of range; {}", key.bounds));
    }
}
