//! Decoding the merged layers into sections key by key, with every problem described: its
//! key, the offending value (never for secrets) and where the value came from.

use std::collections::BTreeSet;

use figment::error::{Actual, Kind};
use figment::value::{Dict, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;

use super::ConfigError;
use super::env::{ENV_LAYER_NAME, env_separator_hint};
use super::secret::REDACTED;
use super::section::{Key, Section, join, level};

/// Decodes a configuration key by key, collecting every problem as a
/// sentence that starts with the key it concerns and ends with where its
/// value came from. The derived [`Section`] code calls it.
pub struct Decoder<'a> {
    figment: &'a Figment,
    problems: Vec<String>,
    /// Keys (or whole tables) that failed to decode, and so hold their defaults.
    failed: BTreeSet<String>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Problems may quote values; the figment holds secrets: neither shown.
        f.debug_struct("Decoder")
            .field("problems", &self.problems.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<'a> Decoder<'a> {
    /// A decoder of `figment` whose report starts with `problems`.
    pub(super) fn new(figment: &'a Figment, problems: Vec<String>) -> Self {
        Self {
            figment,
            problems,
            failed: BTreeSet::new(),
        }
    }

    /// `value`, or every problem reported.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        ConfigError::result(self.problems, value)
    }

    /// Reports `problem` about `key`, naming where the value of `key` came from.
    pub(super) fn report(&mut self, key: &str, problem: impl std::fmt::Display) {
        let problem = format!("{problem}{}", from_source(self.source_of(key)));
        self.push(problem);
    }

    /// Reports `problem` about the value at `key` tagged `tag`, naming the layer it came from
    /// (for keys `figment` cannot find by name, such as entries of arrays).
    pub(super) fn report_tagged(&mut self, key: &str, tag: Tag, problem: impl std::fmt::Display) {
        let source = (self.figment.get_metadata(tag))
            .map(|metadata| describe_source(metadata, self.figment.profile(), key));
        self.push(format!("{problem}{}", from_source(source)));
    }

    fn push(&mut self, problem: String) {
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// Whether `key` decoded (neither it nor a table holding it failed).
    pub(super) fn decoded(&self, key: &str) -> bool {
        let mut prefix = String::new();
        for part in key.split('.') {
            prefix = join(&prefix, part);
            if self.failed.contains(&prefix) {
                return false;
            }
        }
        true
    }

    /// The table at `path` as `T`: its unknown keys reported, then each key
    /// decoded on its own.
    pub(super) fn table<T: Section>(&mut self, path: &str) -> T {
        self.unknown_keys(path, T::KEYS);
        T::decode_fields(self, path)
    }

    /// Reports the keys of the table at `path` that are not among `keys`
    /// (at the top level: unknown sections).
    fn unknown_keys(&mut self, path: &str, keys: &'static [Key]) {
        let names: Vec<String> = if path.is_empty() {
            let Ok(data) = self.figment.data() else {
                return;
            };
            let names: BTreeSet<&String> = data.values().flat_map(Dict::keys).collect();
            names.into_iter().cloned().collect()
        } else {
            match self.figment.find_value(path) {
                Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
                _ => return,
            }
        };
        let known: Vec<&str> = level(keys).iter().map(|key| key.name).collect();
        for name in names {
            if known.contains(&name.as_str()) {
                continue;
            }
            let key = join(path, &name);
            let source = self.source_of(&key);
            let mut problem = match path {
                "" => format!("{key}: unknown section; {}", one_of_near(&name, &known)),
                _ => format!("{key}: unknown key; {}", one_of_near(&name, &known)),
            };
            if path.is_empty()
                && source
                    .as_deref()
                    .is_some_and(|s| s.starts_with(ENV_LAYER_NAME))
                && let Some(hint) = env_separator_hint(&name, &known)
            {
                problem.push_str(&format!(" (did you mean {hint}?)"));
            }
            problem.push_str(&from_source(source));
            self.push(problem);
        }
    }

    /// The value of `key` in the table at `path`, if set and it decodes;
    /// otherwise its problems are reported. Called by the derive.
    #[doc(hidden)]
    pub fn value<T: DeserializeOwned>(&mut self, path: &str, key: &'static Key) -> Option<T> {
        let full = join(path, key.name);
        if !self.figment.contains(&full) {
            if key.required {
                // Named with where the table that lacks it came from.
                let problem = format!("{full}: missing; required in [{path}]");
                self.report(path, problem);
                self.failed.insert(full);
            }
            return None;
        }
        match self.figment.extract_inner::<T>(&full) {
            Ok(value) => Some(value),
            Err(errors) => {
                for error in errors {
                    let problem = self.describe_error(&full, key.secret, &error);
                    self.push(problem);
                }
                self.failed.insert(full);
                None
            }
        }
    }

    /// The nested section `key` of the table at `path` (its defaults when
    /// absent). Called by the derive.
    #[doc(hidden)]
    pub fn section<T: Section>(&mut self, path: &str, key: &'static Key) -> T {
        self.optional_section(path, key).unwrap_or_default()
    }

    /// The nested section `key` of the table at `path`, if given. Called
    /// by the derive.
    #[doc(hidden)]
    pub fn optional_section<T: Section>(&mut self, path: &str, key: &'static Key) -> Option<T> {
        let full = join(path, key.name);
        match self.figment.find_value(&full) {
            Err(_) => None,
            Ok(Value::Dict(..)) => Some(self.table(&full)),
            Ok(other) => {
                let problem = format!(
                    "{full}: invalid type: expected a table, found {}",
                    actual_kind(&other.to_actual())
                );
                self.report(&full, problem);
                self.failed.insert(full);
                None
            }
        }
    }

    /// Turns one figment error of `extract_inner(base)` into a problem
    /// sentence; values are shown only for errors at `base` itself, when it
    /// is not `secret` (inside a collection, which keys are secrets is not
    /// known here).
    fn describe_error(&self, base: &str, secret: bool, error: &figment::Error) -> String {
        let key = error_key(base, error);
        let hidden = secret || key != base;
        let message = error_message(&error.kind, hidden);
        let got = match &error.kind {
            Kind::UnknownField(..) | Kind::UnknownVariant(..) => String::new(),
            kind => self.got(&key, kind, hidden),
        };
        let source = self.source_of(&key).or_else(|| {
            let metadata = error.metadata.as_ref()?;
            Some(describe_source(metadata, self.figment.profile(), &key))
        });
        format!("{key}: {message}{got}{}", from_source(source))
    }

    /// `; got VALUE` for the offending value at `key` (`[redacted]` for
    /// hidden ones), when known.
    fn got(&self, key: &str, kind: &Kind, hidden: bool) -> String {
        let actual = match (self.figment.find_value(key), kind) {
            (Ok(value), _) => value.to_actual(),
            (Err(_), Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _)) => {
                actual.clone()
            }
            (Err(_), _) => return String::new(),
        };
        if hidden {
            format!("; got {REDACTED}")
        } else {
            format!("; got {}", render_actual(&actual))
        }
    }

    /// Where the value at `key` came from, if it is set in some layer.
    fn source_of(&self, key: &str) -> Option<String> {
        let value = self.figment.find_value(key).ok()?;
        let metadata = self.figment.get_metadata(value.tag())?;
        Some(describe_source(metadata, self.figment.profile(), key))
    }
}

/// The key an error of `extract_inner(base)` is about.
fn error_key(base: &str, error: &figment::Error) -> String {
    // figment 0.10.19's `extract_inner` *appends* `base` to the error path
    // (`["addr", "server"]` for `extract_inner("server")`): rebuild the key ourselves.
    let mut key: Vec<&str> = base.split('.').collect();
    let mut path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    if path.ends_with(&key) {
        path.truncate(path.len() - key.len());
    } else if path.starts_with(&key) {
        path.drain(..key.len());
    }
    key.extend(path);
    key.join(".")
}

/// What is wrong, by the kind of error (without the offending value).
fn error_message(kind: &Kind, secret: bool) -> String {
    match kind {
        Kind::UnknownField(name, expected) => {
            format!("unknown key; {}", one_of_near(name, expected))
        }
        Kind::UnknownVariant(value, expected) => {
            let shown = if secret { REDACTED } else { value };
            let mut message = format!("unknown value {shown:?}; {}", one_of(expected));
            if let Some(close) = expected.iter().find(|e| e.eq_ignore_ascii_case(value)) {
                message.push_str(&format!(
                    " (names are case-sensitive: did you mean {close:?}?)"
                ));
            }
            message
        }
        Kind::InvalidType(actual, expected) => format!(
            "invalid type: expected {expected}, found {}",
            actual_kind(actual)
        ),
        Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
        _ if secret => "invalid value".to_owned(),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

fn one_of(expected: &[&str]) -> String {
    format!("expected one of: {}", expected.join(", "))
}

/// [`one_of`], with ` (did you mean X?)` when `name` is a near miss of one
/// of them: a typo, a transposition, a letter too many or too few.
fn one_of_near(name: &str, expected: &[&str]) -> String {
    let mut listed = one_of(expected);
    if let Some(near) = nearest(name, expected) {
        listed.push_str(&format!(" (did you mean {near}?)"));
    }
    listed
}

/// The candidate closest to `name` in edits, if within one edit per four
/// characters (at least one): closer than that is a typo, farther a
/// different word.
pub(super) fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let allowed = (name.chars().count() / 4).max(1);
    candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// ` (from SOURCE)`, or nothing.
fn from_source(source: Option<String>) -> String {
    source.map(|s| format!(" (from {s})")).unwrap_or_default()
}

/// Human description of where a value came from.
fn describe_source(metadata: &Metadata, profile: &Profile, key: &str) -> String {
    match &metadata.source {
        Some(Source::File(path)) => format!("file {}", path.display()),
        _ if metadata.name == ENV_LAYER_NAME => {
            let keys: Vec<&str> = key.split('.').collect();
            format!("{} {}", metadata.name, metadata.interpolate(profile, &keys))
        }
        _ => metadata.name.to_string(),
    }
}

/// The kind of a value, without the value itself.
fn actual_kind(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "an array",
        Actual::Map => "a table",
        Actual::Unit | Actual::Option => "nothing",
        _ => "another kind of value",
    }
}

/// A value as shown in a problem (strings quoted; tables and arrays by kind only).
fn render_actual(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(f) => f.to_string(),
        Actual::Char(c) => format!("{c:?}"),
        Actual::Str(s) => format!("{s:?}"),
        other => actual_kind(other).to_owned(),
    }
}
