//! [`ConfigError`]: every problem of a configuration.

/// Everything wrong with a configuration, reported at once.
///
/// Displays as `invalid configuration:` followed by one `  - problem` line per problem. Problems
/// never contain secret values.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:{}", bullet_list(.problems))]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// An error made of the given problems (for applications validating their own sections).
    pub fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }

    /// The problems, one sentence each, starting with the key they concern.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// `value` when there are no problems, else the error made of them.
    pub(super) fn result<T>(problems: Vec<String>, value: T) -> Result<T, Self> {
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(Self::new(problems))
        }
    }
}

fn bullet_list(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}
