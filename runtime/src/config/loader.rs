//! [`Loader`]: layering the configuration sources.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use super::diagnose::Decoder;
use super::env::EnvLayer;
use super::{Config, ConfigError};

/// Metadata name of the `defaults_toml` layers.
const DEFAULTS_LAYER_NAME: &str = "application defaults (defaults_toml)";

/// Builder that layers configuration sources and loads a [`Config`].
///
/// Precedence is fixed whatever the call order: built-in defaults < [`defaults_toml`] <
/// [`file`] (in call order) < environment ([`env`] / [`env_from`]).
///
/// [`defaults_toml`]: Loader::defaults_toml
/// [`file`]: Loader::file
/// [`env`]: Loader::env
/// [`env_from`]: Loader::env_from
#[derive(Default)]
pub struct Loader {
    defaults: Vec<String>,
    files: Vec<PathBuf>,
    env: Option<EnvLayer>,
    extra_sections: BTreeSet<String>,
    /// The layers above, merged by `rebuild`.
    figment: Figment,
    /// Problems of the TOML layers (unreadable file, bad TOML), found by `rebuild`. When there
    /// are any, decoding the rest would only mislead.
    toml_problems: Vec<String>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold secrets: show the variable names only.
        let env_names = self.env.as_ref().map(|env| &env.names);
        f.debug_struct("Loader")
            .field("defaults_toml_layers", &self.defaults.len())
            .field("files", &self.files)
            .field("env", &env_names)
            .field("extra_sections", &self.extra_sections)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader with only the built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the application's embedded TOML defaults (typically `include_str!("defaults.toml")`),
    /// the layer just above the built-in defaults. Several calls layer in call order.
    pub fn defaults_toml(mut self, toml: &str) -> Self {
        self.defaults.push(toml.to_owned());
        self.rebuild();
        self
    }

    /// Adds a TOML file, which must exist: a missing, unreadable or malformed file is reported
    /// by [`load`](Loader::load) with its path. Several calls layer in call order.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_owned());
        self.rebuild();
        self
    }

    /// Adds the `KEEL_*` variables of the process environment, read now, as the top layer
    /// (replacing any earlier [`env`](Loader::env) / [`env_from`](Loader::env_from) layer).
    pub fn env(mut self) -> Self {
        self.env = Some(EnvLayer::from_process());
        self.rebuild();
        self
    }

    /// Like [`env`](Loader::env), but reads the given `(name, value)` pairs instead of the process
    /// environment (for tests). Names without the `KEEL_` prefix are ignored.
    pub fn env_from<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.env = Some(EnvLayer::from_vars(vars));
        self.rebuild();
        self
    }

    /// Declares an application-specific top-level section (such as `database`), so that
    /// [`load`](Loader::load) does not report it as unknown.
    pub fn allow_section(mut self, name: impl Into<String>) -> Self {
        self.extra_sections.insert(name.into());
        self
    }

    /// The merged layers (without the built-in defaults), for applications that extract their
    /// own sections. Problems of the sources themselves (missing file, malformed TOML) are only
    /// reported by [`load`](Loader::load) and [`extract_section`](Loader::extract_section): a
    /// layer that failed is absent here.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// Loads, decodes and validates the configuration, reporting every problem at once.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut decoder = self.decoder()?;
        decoder.unknown_sections(&self.extra_sections);
        let config = decoder.config();
        for problem in config.semantic_problems() {
            if problem.keys().all(|key| decoder.decoded(key)) {
                decoder.report(problem.key, problem);
            }
        }
        decoder.finish(config)
    }

    /// Extracts an application section (declare it with [`allow_section`](Loader::allow_section)),
    /// with the same error reporting as [`load`](Loader::load). A missing section yields
    /// `T::default()`.
    pub fn extract_section<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Default,
    {
        let mut decoder = self.decoder()?;
        let value = decoder.app_section(name);
        decoder.finish(value)
    }

    /// A decoder of the merged layers, starting with the problems of the sources themselves;
    /// just these when a TOML layer failed.
    fn decoder(&self) -> Result<Decoder<'_>, ConfigError> {
        let env_problems = self.env.iter().flat_map(|env| &env.problems);
        let problems: Vec<String> = self
            .toml_problems
            .iter()
            .chain(env_problems)
            .cloned()
            .collect();
        if self.toml_problems.is_empty() {
            Ok(Decoder::new(&self.figment, problems))
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// Recomputes `figment` and `toml_problems` from the layers, in precedence order.
    fn rebuild(&mut self) {
        let defaults = self.defaults.iter().map(|text| {
            let metadata = Metadata::named(DEFAULTS_LAYER_NAME);
            (metadata, DEFAULTS_LAYER_NAME.to_owned(), parse_toml(text))
        });
        let files = self.files.iter().map(|path| {
            // "TOML file" with `Source::File(path)`, so figment's errors name it.
            let metadata = Toml::file_exact(path).metadata();
            // figment's `Toml::file` silently skips a missing file: read it ourselves.
            let dict = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|text| parse_toml(&text));
            (metadata, format!("config file {}", path.display()), dict)
        });

        let mut figment = Figment::new();
        let mut problems = Vec::new();
        for (metadata, name, dict) in defaults.chain(files) {
            match dict {
                Ok(dict) => figment = figment.merge(TomlLayer { metadata, dict }),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if let Some(env) = &self.env {
            figment = figment.merge(env);
        }
        self.figment = figment;
        self.toml_problems = problems;
    }
}

/// A parsed TOML layer with the given metadata.
struct TomlLayer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for TomlLayer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Parses TOML into a figment dictionary. The error names the line and column but, unlike
/// toml's `Display`, never quotes the offending line (which could hold a secret).
fn parse_toml(text: &str) -> Result<Dict, String> {
    Toml::from_str::<Dict>(text).map_err(|e| {
        let message = e.message().trim();
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("invalid TOML: at line {line}, column {column}: {message}")
            }
            None => format!("invalid TOML: {message}"),
        }
    })
}
