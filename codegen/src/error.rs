use std::fmt;
use std::path::PathBuf;

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

    /// Converts a protox error, pointing at the first labelled span it carries.
    pub(crate) fn from_protox(err: protox::Error) -> Self {
        use miette::Diagnostic as _;
        let position = err
            .labels()
            .and_then(|mut labels| labels.next())
            .and_then(|label| {
                let contents = err.source_code()?.read_span(label.inner(), 0, 0).ok()?;
                Some((contents.line() + 1, contents.column() + 1))
            });
        let (line, column) = position.unwrap_or((0, 0));
        // Option errors nest the precise cause ("field 'x' not found for
        // message 'keel.v1.MethodOptions'"): append it.
        let mut message = err.to_string();
        let mut cause = err.diagnostic_source();
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = inner.diagnostic_source();
        }
        Error::Proto(Diagnostic {
            file: PathBuf::from(err.file().unwrap_or("<unknown>")),
            line,
            column,
            message,
        })
    }
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
