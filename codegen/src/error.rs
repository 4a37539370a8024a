use std::fmt;
use std::path::PathBuf;

use prost_reflect::DescriptorPool;

use crate::locate;

/// A problem in a `.proto` file, at a position a user can jump to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as found on the include path.
    pub file: PathBuf,
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file failed to parse or type-check (this includes unknown
    /// fields inside a Keel option).
    #[error("{0}")]
    Proto(Diagnostic),
    /// One or more Keel annotations are invalid; all of them are listed.
    #[error("invalid Keel annotations:\n{}", list(.0))]
    Annotations(Vec<Diagnostic>),
    /// The compiled descriptors could not be read back.
    #[error("reading compiled descriptors: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// No output directory was given and `OUT_DIR` is not set.
    #[error("no output directory: call `out_dir()` or run from a build script (OUT_DIR)")]
    NoOutDir,
    /// [`Builder::runtime_crate`](crate::Builder::runtime_crate) is not a Rust path.
    #[error("runtime crate path {0:?} is not a Rust path")]
    RuntimeCrate(String),
    /// Writing the generated code failed.
    #[error("writing generated code: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The positioned problems behind this error (empty for I/O errors).
    pub fn diagnostics(&self) -> Vec<&Diagnostic> {
        match self {
            Error::Proto(d) => vec![d],
            Error::Annotations(ds) => ds.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Converts a protox error, pointing at the first labelled span it
    /// carries, or closer: at the token of an option's message literal that
    /// its cause is about, or the option name it could not resolve. Names
    /// of the bundled protos (`bundled`: Keel's options, `buf.validate`,
    /// `google.api`) that are close to an unknown one are suggested.
    pub(crate) fn from_protox(err: protox::Error, bundled: Option<&DescriptorPool>) -> Self {
        use miette::Diagnostic as _;
        let label = err.labels().and_then(|mut labels| labels.next());
        let text = err.source_code().and_then(whole_text);
        let mut position = label.as_ref().and_then(|label| {
            let contents = err.source_code()?.read_span(label.inner(), 0, 0).ok()?;
            Some((contents.line() + 1, contents.column() + 1))
        });
        // Option errors nest the precise cause ("field 'x' not found for
        // message 'keel.v1.MethodOptions'"): append it, and find where in
        // the option's literal it is (its span is in the literal as protox
        // passes it on, not in the file).
        let mut message = err.to_string();
        let mut innermost = None;
        let mut before = None;
        let mut cause = err.diagnostic_source();
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            innermost = Some(inner.to_string());
            if let Some(prefix) = text_before_label(inner) {
                before = Some(prefix);
            }
            cause = inner.diagnostic_source();
        }
        let found = match (&text, label.as_ref()) {
            (Some(text), Some(label)) => {
                Inside::find(text, label.offset(), &message, innermost.as_deref(), before)
            }
            _ => Inside::default(),
        };
        if let (Some(text), Some(offset)) = (&text, found.offset) {
            position = Some(locate::line_column(text, offset));
        }
        if let Some(suggestion) = bundled.and_then(|pool| {
            suggest(
                pool,
                &message,
                innermost.as_deref(),
                found.extension.as_deref(),
            )
        }) {
            message.push_str(&format!("; did you mean `{suggestion}`?"));
        }
        let (line, column) = position.unwrap_or((0, 0));
        Error::Proto(Diagnostic {
            file: PathBuf::from(err.file().unwrap_or("<unknown>")),
            line,
            column,
            message,
        })
    }
}

/// Where inside the option statement a protox error is about.
#[derive(Default)]
struct Inside {
    /// The byte offset in the file.
    offset: Option<usize>,
    /// The statement's extension, when it is what does not resolve.
    extension: Option<String>,
}

impl Inside {
    /// Finds it in the statement starting at `start` of `text`, from the
    /// error's `message`, its innermost cause and the literal before that
    /// cause's label.
    fn find(
        text: &str,
        start: usize,
        message: &str,
        innermost: Option<&str>,
        before: Option<String>,
    ) -> Inside {
        let unknown_field =
            innermost.and_then(|cause| quoted_pair(cause, "field '", "' not found for message '"));
        if let Some(before) = before {
            // For an unknown field, only where that name is (were the tokens
            // ever to differ from protox's).
            let offset = locate::token_in_literal(text, start, &before)
                .filter(|(_, token)| unknown_field.is_none_or(|(field, _)| field == *token))
                .map(|(at, _)| at);
            return Inside {
                offset,
                extension: None,
            };
        }
        // An option name that does not resolve: at its last part.
        if let Some(name) = unresolved_option(message) {
            let last = option_name_parts(name).len() - 1;
            return Inside {
                offset: locate::name_in_statement(text, start, last).map(|(at, _)| at),
                extension: None,
            };
        }
        // An extension that does not resolve, when it is the statement's
        // (the same error names an unknown type anywhere).
        let bare = |name: &str| name.trim_matches(['(', ')', '.']).to_owned();
        unresolved_name(message)
            .and_then(|unknown| {
                locate::name_in_statement(text, start, 0).filter(|(_, name)| bare(name) == unknown)
            })
            .map(|(at, name)| Inside {
                offset: Some(at),
                extension: Some(bare(name)),
            })
            .unwrap_or_default()
    }
}

/// A name of the bundled protos close to the unknown one an error is about:
/// a field or enum value in a literal, a field in an option name, or the
/// option's extension.
fn suggest(
    pool: &DescriptorPool,
    message: &str,
    innermost: Option<&str>,
    extension: Option<&str>,
) -> Option<String> {
    if let Some(found) = innermost.and_then(|cause| suggest_in_literal(cause, pool)) {
        return Some(found);
    }
    if let Some(name) = unresolved_option(message) {
        return suggest_option(name, pool);
    }
    let names: Vec<String> = pool
        .all_extensions()
        .map(|e| e.full_name().to_owned())
        .collect();
    closest(extension?, names.iter().map(String::as_str)).map(|n| format!("({n})"))
}

/// The name of `candidates` closest to `name`, if one is close enough to be
/// what was meant (Damerau-Levenshtein, case aside, at most a third of the
/// name's length, 1 for short names): `None` rather than a guess.
pub(crate) fn closest<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(1);
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&name, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// All of a source's text (the file protox failed on, or the literal a
/// cause's span is in).
fn whole_text(source: &dyn miette::SourceCode) -> Option<String> {
    // From the first byte, every line after it.
    let contents = source
        .read_span(&miette::SourceSpan::new(0.into(), 0), 0, usize::MAX)
        .ok()?;
    Some(String::from_utf8_lossy(contents.data()).into_owned())
}

/// The text of a cause's source before its first label.
fn text_before_label(cause: &dyn miette::Diagnostic) -> Option<String> {
    let offset = cause.labels()?.next()?.offset();
    let contents = cause
        .source_code()?
        .read_span(&miette::SourceSpan::new(0.into(), offset), 0, 0)
        .ok()?;
    let prefix = contents.data().get(..offset)?;
    Some(String::from_utf8_lossy(prefix).into_owned())
}

/// A known name close to the unknown one a text-format cause names: a field
/// of the message, or a value of the enum.
fn suggest_in_literal(cause: &str, pool: &DescriptorPool) -> Option<String> {
    if let Some((field, message)) = quoted_pair(cause, "field '", "' not found for message '") {
        let message = pool.get_message_by_name(message)?;
        let names: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
        return closest(field, names.iter().map(String::as_str)).map(str::to_owned);
    }
    let (value, enumeration) = quoted_pair(cause, "value '", "' was not found for enum '")?;
    let enumeration = pool.get_enum_by_name(enumeration)?;
    let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
    closest(value, names.iter().map(String::as_str)).map(str::to_owned)
}

/// `(a, b)` of a message `{head}a{middle}b'`.
fn quoted_pair<'m>(message: &'m str, head: &str, middle: &str) -> Option<(&'m str, &'m str)> {
    let rest = message.strip_prefix(head)?;
    let (first, rest) = rest.split_once(middle)?;
    Some((first, rest.strip_suffix('\'')?))
}

/// The option name of an "option field '…' is not defined" error.
fn unresolved_option(message: &str) -> Option<&str> {
    let rest = &message[message.find("option field '")? + "option field '".len()..];
    rest.split_once("' is not defined").map(|(name, _)| name)
}

/// The name of a "'…' resolves to '…', which is not defined" error.
fn unresolved_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix('\'')?;
    let (name, rest) = rest.split_once('\'')?;
    rest.ends_with(", which is not defined").then_some(name)
}

/// The parts of an option name as protox writes it: `(buf.validate.field)`,
/// `string`, `min_len` of `(buf.validate.field).string.min_len`.
fn option_name_parts(name: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in name.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&name[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&name[start..]);
    parts
}

/// A known name close to the last part of an option name that does not
/// resolve: an extension of the bundled protos, or a field of the message
/// the parts before it name.
fn suggest_option(name: &str, pool: &DescriptorPool) -> Option<String> {
    let parts = option_name_parts(name);
    let (last, path) = parts.split_last()?;
    let Some((first, fields)) = path.split_first() else {
        let extension = last.trim_matches(|c| c == '(' || c == ')');
        let names: Vec<String> = pool
            .all_extensions()
            .map(|e| e.full_name().to_owned())
            .collect();
        return closest(extension, names.iter().map(String::as_str)).map(|n| format!("({n})"));
    };
    let extension = pool.get_extension_by_name(first.trim_matches(|c| c == '(' || c == ')'))?;
    let mut message = extension.kind().as_message()?.clone();
    for field in fields {
        message = message
            .get_field_by_name(field)?
            .kind()
            .as_message()?
            .clone();
    }
    let names: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
    closest(last, names.iter().map(String::as_str)).map(str::to_owned)
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
