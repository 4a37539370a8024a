//! [`Loader`]: layering the configuration sources.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::env::{EnvLayer, EnvVars, ignored_warning};
use super::section::{Key, Problems, Section, find, level};
use super::{Config, ConfigError, Decoder, Environment, environment, key_set};

/// Metadata name of the `defaults_toml` layers.
const DEFAULTS_LAYER_NAME: &str = "application defaults (defaults_toml)";

/// Metadata name of the `development_toml` layers.
const DEVELOPMENT_LAYER_NAME: &str = "development defaults (development_toml)";

/// Builder that layers configuration sources and loads a [`Config`].
///
/// Precedence is fixed whatever the call order: built-in defaults < [`defaults_toml`] <
/// [`development_toml`] (only in development) < [`file`] (in call order) < environment
/// ([`env`] / [`env_from`]). A layer that defines the verification keys replaces those of the
/// layers below it (see the [module docs](super)).
///
/// [`defaults_toml`]: Loader::defaults_toml
/// [`development_toml`]: Loader::development_toml
/// [`file`]: Loader::file
/// [`env`]: Loader::env
/// [`env_from`]: Loader::env_from
#[derive(Default, Clone)]
pub struct Loader {
    /// Set by [`Loader::environment`]: `service.environment` below every layer.
    environment: Option<Environment>,
    defaults: Vec<String>,
    development: Vec<String>,
    files: Vec<PathBuf>,
    env: Option<EnvVars>,
}

/// The layers merged for one configuration type (whose keys say which environment values
/// are text).
struct Assembled {
    figment: Figment,
    /// Problems of the layers (unreadable file, bad TOML, malformed variables). When a TOML
    /// layer failed, decoding the rest would only mislead.
    problems: Vec<String>,
    toml_failed: bool,
    /// In production, the development layers' credentials, which no key may hold (empty in
    /// development).
    development_credentials: Vec<String>,
    /// `KEEL_` variables that are not configuration (no `__`), to warn of.
    ignored: Vec<String>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold secrets: show the variable names only.
        let env_names = self.env.as_ref().map(EnvVars::names);
        f.debug_struct("Loader")
            .field("defaults_toml_layers", &self.defaults.len())
            .field("development_toml_layers", &self.development.len())
            .field("files", &self.files)
            .field("env", &env_names)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader with only the built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A service's usual layers: its embedded `defaults_toml`, in development its
    /// `development_toml`, `file` when given (it must exist), then the process's `KEEL_*`
    /// variables.
    ///
    /// ```no_run
    /// use keel_rpc::config::{Config, Loader};
    ///
    /// const DEFAULTS: &str = "[service]\nname = \"users\"\n";
    /// const DEVELOPMENT: &str = "[auth]\nhmac_secret = \"a-development-secret-everyone-knows\"\n";
    /// let config: Config = Config::from_loader(&Loader::service(DEFAULTS, DEVELOPMENT, None))?;
    /// # Ok::<(), keel_rpc::config::ConfigError>(())
    /// ```
    pub fn service(defaults_toml: &str, development_toml: &str, file: Option<&Path>) -> Self {
        let mut loader = Loader::new()
            .defaults_toml(defaults_toml)
            .development_toml(development_toml);
        if let Some(file) = file {
            loader = loader.file(file);
        }
        loader.env()
    }

    /// Adds the application's embedded TOML defaults (typically `include_str!("defaults.toml")`),
    /// the layer just above the built-in defaults. Several calls layer in call order.
    pub fn defaults_toml(mut self, toml: &str) -> Self {
        self.defaults.push(toml.to_owned());
        self
    }

    /// Sets `service.environment` below every layer (any layer may still say otherwise), for
    /// tests and tools that run a service in development without touching the process
    /// environment. Default is production.
    ///
    /// ```
    /// use keel_rpc::config::{Environment, Loader};
    ///
    /// let config = Loader::new()
    ///     .environment(Environment::Development)
    ///     .development_toml("[auth]\nhmac_secret = \"a-development-secret-everyone-knows\"\n")
    ///     .load()?;
    /// assert!(config.service.environment.is_development());
    /// # Ok::<(), keel_rpc::config::ConfigError>(())
    /// ```
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Adds the application's development credentials and conveniences (a known HMAC secret, a
    /// bootstrap password), merged above [`defaults_toml`](Loader::defaults_toml) and below
    /// files and the environment **only** when `service.environment = "development"` (set by any
    /// other layer, typically `KEEL_SERVICE__ENVIRONMENT=development`).
    ///
    /// In production the layer is left out, and a configured value equal to one of its strings
    /// of 16 bytes or more is an error naming the key: a development secret copied into a
    /// production file or variable is refused, not warned about. Several calls layer in call
    /// order. See [`Environment`] for an example.
    pub fn development_toml(mut self, toml: &str) -> Self {
        self.development.push(toml.to_owned());
        self
    }

    /// Adds a TOML file, which must exist: a missing, unreadable or malformed file is reported
    /// by [`load`](Loader::load) with its path. Several calls layer in call order.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_owned());
        self
    }

    /// Adds the `KEEL_*` variables of the process environment, read now, as the top layer
    /// (replacing any earlier [`env`](Loader::env) / [`env_from`](Loader::env_from) layer).
    pub fn env(mut self) -> Self {
        self.env = Some(EnvVars::from_process());
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
        self.env = Some(EnvVars::from_vars(vars));
        self
    }

    /// Loads, decodes and validates Keel's configuration, reporting every problem at once
    /// (with a service's own sections: [`Config::from_loader`]).
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::from_loader(self)
    }

    /// Loads `T` (a whole configuration: its fields are the top-level sections) from the
    /// layers, reporting every problem at once: layers that cannot be read, values that do
    /// not decode, unknown keys and sections, development credentials in production, and
    /// `T`'s checks.
    pub(super) fn load_as<T: Section>(&self) -> Result<T, ConfigError> {
        let assembled = self.assemble(T::KEYS);
        if assembled.toml_failed {
            return Err(ConfigError::new(assembled.problems));
        }
        if !assembled.ignored.is_empty() {
            let sections: Vec<&str> = level(T::KEYS).iter().map(|key| key.name).collect();
            warn_once(&ignored_warning(&assembled.ignored, &sections));
        }
        let mut decoder = Decoder::new(&assembled.figment, assembled.problems);
        if let Ok(data) = assembled.figment.data()
            && let Some(data) = data.get(&Profile::Default)
        {
            for (key, tag) in environment::keys_holding(data, &assembled.development_credentials) {
                decoder.report_tagged(
                    &key,
                    tag,
                    format!(
                        "{key}: is a development credential, not allowed in production; \
                         configure one of your own (or set service.environment = \"development\")"
                    ),
                );
            }
        }
        let value: T = decoder.table("");
        let mut found = Vec::new();
        value.check(&mut Problems::new(&mut found));
        for problem in found {
            if problem.keys().all(|key| decoder.decoded(key)) {
                decoder.report(&problem.key.clone(), problem);
            }
        }
        decoder.finish(value)
    }

    /// The layers merged, in precedence order, for a configuration of `keys`.
    fn assemble(&self, keys: &'static [Key]) -> Assembled {
        let toml = |name: &'static str, text: &str| Layer {
            metadata: Metadata::named(name),
            name: name.to_owned(),
            dict: parse_toml(text),
        };
        let defaults = self.defaults.iter().map(|t| toml(DEFAULTS_LAYER_NAME, t));
        let development: Vec<Layer> = (self.development.iter())
            .map(|t| toml(DEVELOPMENT_LAYER_NAME, t))
            .collect();
        let files = self.files.iter().map(|path| Layer {
            // "TOML file" with `Source::File(path)`, so figment's errors name it.
            metadata: Toml::file_exact(path).metadata(),
            name: format!("config file {}", path.display()),
            // figment's `Toml::file` silently skips a missing file: read it ourselves.
            dict: std::fs::read_to_string(path)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|text| parse_toml(&text)),
        });
        let chosen = self.environment.map(|environment| {
            let name = "Loader::environment";
            let service =
                Dict::from([("environment".to_owned(), Value::from(environment.as_str()))]);
            let dict = Dict::from([("service".to_owned(), Value::from(service))]);
            Layer {
                metadata: Metadata::named(name),
                name: name.to_owned(),
                dict: Ok(dict),
            }
        });
        let mut layers: Vec<Layer> = chosen.into_iter().chain(defaults).collect();
        let below_development = layers.len();
        layers.extend(files);

        let env = (self.env.as_ref())
            .map(|env| env.layer(&|key| find(keys, key).is_some_and(|key| key.text)));
        // Any layer but the development one may ask for development.
        let (without_development, _) = merge(&layers, env.as_ref());
        let environment: Environment = without_development
            .extract_inner("service.environment")
            .unwrap_or_default();
        let dicts = development
            .iter()
            .filter_map(|layer| layer.dict.as_ref().ok());
        let development_credentials = match environment {
            Environment::Development => Vec::new(),
            Environment::Production => environment::credentials(dicts),
        };
        let mut problems: Vec<String> = Vec::new();
        if environment.is_development() {
            layers.splice(below_development..below_development, development);
        } else {
            // Left out, but a malformed one is still the application's mistake to hear of.
            problems.extend(development.iter().filter_map(Layer::problem));
        }

        // Every layer below the highest that defines the verification keys loses its own.
        let env_defines_keys = (env.as_ref()).is_some_and(|env| key_set::defines_keys(&env.dict));
        let top = if env_defines_keys {
            Some(layers.len())
        } else {
            layers.iter().rposition(Layer::defines_keys)
        };
        for layer in &mut layers[..top.unwrap_or(0)] {
            if let Ok(dict) = &mut layer.dict {
                key_set::remove_keys(dict);
            }
        }
        let (figment, merge_problems) = merge(&layers, env.as_ref());
        problems.extend(merge_problems);
        let toml_failed = !problems.is_empty();
        let ignored = env
            .as_ref()
            .map(|env| env.ignored.clone())
            .unwrap_or_default();
        problems.extend(env.into_iter().flat_map(|env| env.problems));
        Assembled {
            figment,
            problems,
            toml_failed,
            development_credentials,
            ignored,
        }
    }
}

/// Says `warning` once per process (a service loads its configuration more
/// than once: to check it, then to serve). Configuration is loaded before
/// logging is set up, so it goes to standard error unless a `tracing`
/// subscriber is already installed.
fn warn_once(warning: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.iter().any(|w| w == warning) {
        return;
    }
    said.push(warning.to_owned());
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{warning}");
    } else {
        eprintln!("warning: {warning}");
    }
}

/// `layers` and the environment merged, and the problems of the layers that failed.
fn merge(layers: &[Layer], env: Option<&EnvLayer>) -> (Figment, Vec<String>) {
    let mut figment = Figment::new();
    let mut problems = Vec::new();
    for layer in layers {
        match &layer.dict {
            Ok(dict) => {
                figment = figment.merge(TomlLayer {
                    metadata: layer.metadata.clone(),
                    dict: dict.clone(),
                })
            }
            Err(_) => problems.extend(layer.problem()),
        }
    }
    if let Some(env) = env {
        figment = figment.merge(env);
    }
    (figment, problems)
}

/// A TOML layer as read: where it came from, and its table or what was wrong with it.
struct Layer {
    metadata: Metadata,
    /// How problems name it (`config file keel.toml`).
    name: String,
    dict: Result<Dict, String>,
}

impl Layer {
    fn defines_keys(&self) -> bool {
        self.dict.as_ref().is_ok_and(key_set::defines_keys)
    }

    fn problem(&self) -> Option<String> {
        let error = self.dict.as_ref().err()?;
        Some(format!("{}: {error}", self.name))
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
