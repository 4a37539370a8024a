//! The environment layer: `KEEL_*` variables as a figment provider.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Prefix of the environment variables read by [`Loader::env`](super::Loader::env).
pub const ENV_PREFIX: &str = "KEEL_";

/// Variables starting with this prefix are not configuration: they belong to test harnesses
/// (`KEEL_TEST_POSTGRES_URL`, the database of the PostgreSQL tests), and [`Loader::env`]
/// ignores them.
///
/// [`Loader::env`]: super::Loader::env
pub const ENV_TEST_PREFIX: &str = "KEEL_TEST_";

/// Separator of nested keys in environment variable names (`KEEL_AUTH__LEEWAY`).
pub const ENV_SEPARATOR: &str = "__";

/// Metadata name of the environment layer (see `diagnose::describe_source`).
pub(super) const ENV_LAYER_NAME: &str = "environment variable";

/// The `KEEL_*` variables of an environment, as read.
#[derive(Clone)]
pub(super) struct EnvVars {
    vars: Vec<(String, String)>,
    /// Variables that could not be read (non-UTF-8 values).
    problems: Vec<String>,
}

/// The `KEEL_*` variables of an environment layer, parsed into nested keys.
pub(super) struct EnvLayer {
    pub dict: Dict,
    /// Problems of the variables themselves: non-UTF-8 values, malformed names, conflicts.
    pub problems: Vec<String>,
    /// Variables with no [`ENV_SEPARATOR`] in their name, so not configuration
    /// (every key is in a section): left out, and warned of.
    pub(crate) ignored: Vec<String>,
}

impl EnvVars {
    /// The variable names (`Debug` of the loader shows them; the values may be secrets).
    pub(super) fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// The `KEEL_*` variables of the process environment, read now.
    pub(super) fn from_process() -> Self {
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| has_env_prefix(n)) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => vars.push((name.to_owned(), value)),
                Err(_) => problems.push(format!(
                    "environment variable {name}: value is not valid UTF-8"
                )),
            }
        }
        EnvVars { vars, problems }
    }

    /// The `KEEL_*` variables among `vars`; others are ignored.
    pub(super) fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars = vars.into_iter().filter(|(name, _)| has_env_prefix(name));
        EnvVars {
            vars: vars.collect(),
            problems: Vec::new(),
        }
    }

    /// The variables as nested keys. The values of the keys `text` says are
    /// text are taken verbatim; others are parsed as figment's `Env`
    /// provider does (`true`, `10`, `-1`, `"quoted"`, anything else is a
    /// string), so `KEEL_METRICS__ENABLED=maybe` is an error rather than
    /// `false`.
    pub(super) fn layer(&self, text: &dyn Fn(&str) -> bool) -> EnvLayer {
        let mut problems = self.problems.clone();
        let mut dict = Dict::new();
        let mut ignored = Vec::new();
        for (name, raw) in &self.vars {
            // Every key is in a section, so a variable without the separator
            // sets none: it is someone else's that happens to start with
            // `KEEL_`, such as the `KEEL_AUTH_PORT=tcp://…` Kubernetes puts in
            // every pod of a namespace with a Service named `keel-auth`.
            // Refusing to start over it would let any Service name stop a fleet.
            if !name.contains(ENV_SEPARATOR) {
                ignored.push(name.clone());
                continue;
            }
            let Some(path) = key_path(name) else {
                problems.push(format!(
                    "environment variable {name}: malformed name; use letters, digits and `_`, \
                     with `{ENV_SEPARATOR}` between nested keys (e.g. KEEL_AUTH__LEEWAY)"
                ));
                continue;
            };
            let value = if text(&path.join(".")) {
                Value::from(raw.clone())
            } else {
                let Ok(value) = raw.parse::<Value>();
                value
            };
            if let Err(conflict) = insert_nested(&mut dict, &path, value) {
                problems.push(format!(
                    "environment variable {name}: conflicts with another KEEL_ variable setting \
                     {conflict}"
                ));
            }
        }
        ignored.sort();
        EnvLayer {
            dict,
            problems,
            ignored,
        }
    }
}

/// How many ignored variables a warning names; the rest are counted.
const NAMED_IGNORED: usize = 8;

/// The warning about `KEEL_` variables that are not configuration, with a
/// hint for one that looks like a mistyped key of one of `sections`.
pub(super) fn ignored_warning(ignored: &[String], sections: &[&str]) -> String {
    let named: Vec<String> = ignored
        .iter()
        .take(NAMED_IGNORED)
        .map(|name| {
            let rest = name
                .get(ENV_PREFIX.len()..)
                .unwrap_or("")
                .to_ascii_lowercase();
            match env_separator_hint(&rest, sections) {
                Some(hint) => format!("{name} (did you mean {hint}?)"),
                None => name.clone(),
            }
        })
        .collect();
    let more = match ignored.len().saturating_sub(NAMED_IGNORED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "ignoring environment variables that are not configuration (configuration variables are \
         {ENV_PREFIX}<SECTION>{ENV_SEPARATOR}<KEY>): {}{more}",
        named.join(", ")
    )
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_LAYER_NAME).interpolater(env_var_name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Whether `name` is a configuration variable: it starts with [`ENV_PREFIX`] but not with
/// [`ENV_TEST_PREFIX`] (variables of test harnesses, such as `KEEL_TEST_POSTGRES_URL`).
fn has_env_prefix(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    starts(ENV_PREFIX) && !starts(ENV_TEST_PREFIX)
}

/// The key path a `KEEL_*` variable sets (`KEEL_AUTH__LEEWAY` → `["auth", "leeway"]`), or
/// `None` when its name is malformed.
fn key_path(name: &str) -> Option<Vec<String>> {
    let rest = name.get(ENV_PREFIX.len()..)?.to_ascii_lowercase();
    let path: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_owned).collect();
    let well_formed =
        |s: &String| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    path.iter().all(well_formed).then_some(path)
}

/// Inserts `value` at `path`; on a clash with an existing value, returns the clashing key.
fn insert_nested(dict: &mut Dict, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = dict;
    for (i, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        match entry {
            Value::Dict(_, inner) => current = inner,
            _ => return Err(path[..=i].join(".")),
        }
    }
    if current.contains_key(last) {
        return Err(path.join("."));
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// The `KEEL_*` variable that sets the key path `keys` (the environment layer's interpolater).
pub(super) fn env_var_name(_: &Profile, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", keys.join(ENV_SEPARATOR))
}

/// `server_addr` (from `KEEL_SERVER_ADDR`) → `KEEL_SERVER__ADDR`, for one of `sections`.
pub(super) fn env_separator_hint(name: &str, sections: &[&str]) -> Option<String> {
    sections.iter().find_map(|section| {
        let rest = name.strip_prefix(section)?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| env_var_name(&Profile::Default, &[section, rest]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_harness_variables_are_not_configuration() {
        assert!(has_env_prefix("KEEL_SERVER__ADDR"));
        assert!(has_env_prefix("keel_server__addr"));
        assert!(!has_env_prefix("KEEL_TEST_POSTGRES_URL"));
        assert!(!has_env_prefix("keel_test_anything"));
        assert!(!has_env_prefix("OTHER"));
        let vars = EnvVars::from_vars([
            (
                "KEEL_TEST_POSTGRES_URL".to_owned(),
                "postgres://x".to_owned(),
            ),
            ("KEEL_SERVICE__NAME".to_owned(), "s".to_owned()),
        ]);
        assert_eq!(vars.names(), ["KEEL_SERVICE__NAME"]);
        assert!(vars.layer(&|_| false).problems.is_empty());
    }

    #[test]
    fn variables_without_the_separator_are_not_configuration() {
        // What Kubernetes injects for a Service named `keel-auth`.
        let vars = EnvVars::from_vars([
            (
                "KEEL_AUTH_PORT".to_owned(),
                "tcp://10.0.0.7:50053".to_owned(),
            ),
            ("KEEL_AUTH_SERVICE_HOST".to_owned(), "10.0.0.7".to_owned()),
            ("KEEL_SERVICE__NAME".to_owned(), "s".to_owned()),
        ]);
        let layer = vars.layer(&|_| true);
        assert!(layer.problems.is_empty(), "{:?}", layer.problems);
        assert_eq!(layer.ignored, ["KEEL_AUTH_PORT", "KEEL_AUTH_SERVICE_HOST"]);
        assert_eq!(layer.dict.keys().collect::<Vec<_>>(), ["service"]);
        assert_eq!(
            ignored_warning(&layer.ignored, &["auth", "service"]),
            "ignoring environment variables that are not configuration (configuration variables \
             are KEEL_<SECTION>__<KEY>): KEEL_AUTH_PORT (did you mean KEEL_AUTH__PORT?), \
             KEEL_AUTH_SERVICE_HOST (did you mean KEEL_AUTH__SERVICE_HOST?)"
        );
        let many: Vec<String> = (0..10).map(|i| format!("KEEL_X{i}")).collect();
        assert!(ignored_warning(&many, &[]).ends_with("KEEL_X7 and 2 more"));
    }

    #[test]
    fn text_keys_are_taken_verbatim_and_others_parsed() {
        let vars = EnvVars::from_vars([
            ("KEEL_SERVICE__NAME".to_owned(), "123".to_owned()),
            ("KEEL_SERVER__MAX_CONNECTIONS".to_owned(), "123".to_owned()),
        ]);
        let layer = vars.layer(&|key| key == "service.name");
        let get = |section: &str, key: &str| match &layer.dict[section] {
            Value::Dict(_, dict) => dict[key].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(get("service", "name").into_string().as_deref(), Some("123"));
        assert_eq!(get("server", "max_connections").to_u128(), Some(123));
    }
}
