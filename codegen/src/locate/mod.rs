//! Source positions of options: a descriptor path to the `file:line:column`
//! a diagnostic points at (from the source info protox keeps), shared by
//! the annotation readers and the validation rules.
//!
//! The source info locates an option statement as a whole
//! (`option (keel.v1.method) = { … };` has one location, at `option`), never
//! a field inside its text-format value. To point at the field or the value
//! that is wrong, [`Locator::at_field`] reads the statement's text again with
//! the small scanner of [`literal`], and falls back to the deepest field it
//! did find, then to the statement, when the field is not written there (a
//! default, or a value the service level set).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::PathBuf;

use prost_reflect::FileDescriptor;

use crate::error::Diagnostic;

/// One step into an option's value: a field by name, and which of its
/// values (counted across repeated occurrences and list elements; 0 for a
/// singular field).
pub(crate) type Step<'a> = (&'a str, usize);

/// Finds the source position of a descriptor path in a file.
pub(crate) struct Locator<'a> {
    file: &'a FileDescriptor,
    paths: &'a HashMap<String, PathBuf>,
    /// The file's text, read from disk when a diagnostic first needs it;
    /// `None` when it cannot be (a bundled file).
    text: OnceCell<Option<String>>,
}

impl<'a> Locator<'a> {
    /// Locates in `file`, whose path on disk is in `paths` (by import name).
    pub(crate) fn new(file: &'a FileDescriptor, paths: &'a HashMap<String, PathBuf>) -> Self {
        Locator {
            file,
            paths,
            text: OnceCell::new(),
        }
    }

    /// A diagnostic at the innermost recorded location enclosing `path`.
    pub(crate) fn at(&self, path: &[i32], message: String) -> Diagnostic {
        let span = self
            .file
            .file_descriptor_proto()
            .source_code_info
            .as_ref()
            .and_then(|info| {
                info.location
                    .iter()
                    .filter(|loc| path.starts_with(&loc.path))
                    .max_by_key(|loc| loc.path.len())
            })
            .map(|loc| loc.span.clone())
            .unwrap_or_default();
        Diagnostic {
            file: self.file_path(),
            line: span.first().map_or(0, |l| *l as usize + 1),
            column: span.get(1).map_or(0, |c| *c as usize + 1),
            message,
        }
    }

    /// A diagnostic at the field `within` of the option at `path` (its value
    /// when that is a scalar, its name when a message), or at the deepest
    /// part of `within` that is written, or else where [`Locator::at`] is.
    pub(crate) fn at_field(
        &self,
        path: &[i32],
        within: &[Step<'_>],
        message: String,
    ) -> Diagnostic {
        match self.find(path, within) {
            Some((line, column)) => Diagnostic {
                file: self.file_path(),
                line,
                column,
                message,
            },
            None => self.at(path, message),
        }
    }

    /// The 1-based line and column of the deepest part of `within` written
    /// in a statement setting the option at `path`.
    fn find(&self, path: &[i32], within: &[Step<'_>]) -> Option<(usize, usize)> {
        if within.is_empty() {
            return None;
        }
        let text = self.text()?;
        let info = self
            .file
            .file_descriptor_proto()
            .source_code_info
            .as_ref()?;
        // Every statement setting this option: the option itself, or one of
        // its fields (`option (keel.v1.method).auth.public = true;`, whose
        // location's path goes on into the option).
        let found = info
            .location
            .iter()
            .filter(|loc| loc.path.starts_with(path))
            .filter_map(|loc| {
                let start = offset_of(text, *loc.span.first()?, *loc.span.get(1)?)?;
                literal::find(text, start, within)
            })
            // The deepest; of those, the first in the file.
            .max_by(|a, b| a.depth.cmp(&b.depth).then(b.offset.cmp(&a.offset)))?;
        Some(line_column(text, found.offset))
    }

    fn text(&self) -> Option<&str> {
        self.text
            .get_or_init(|| {
                let path = self.paths.get(self.file.name())?;
                std::fs::read_to_string(path).ok()
            })
            .as_deref()
    }

    fn file_path(&self) -> PathBuf {
        let name = self.file.name();
        self.paths
            .get(name)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(name))
    }
}

/// The byte offset of a 0-based line and byte column (as protox records
/// them: lines end at `\n`, columns count bytes).
fn offset_of(text: &str, line: i32, column: i32) -> Option<usize> {
    let line = usize::try_from(line).ok()?;
    let column = usize::try_from(column).ok()?;
    let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
    let offset = start + column;
    (offset <= text.len()).then_some(offset)
}

/// The 1-based line and byte column of a byte offset of `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before.len() - line_start + 1,
    )
}

/// The byte offset in `text` of the token that an error inside an option's
/// message literal is at, for an option statement starting at `start`.
///
/// protox hands a message literal on as its tokens joined by spaces, and an
/// error inside it (an unknown field, a value of the wrong type) has a span
/// in that text, not in the file: `before` is that text up to the error.
/// Tokens are the same in both, so the error is at the token of the same
/// index in the file's literal.
pub(crate) fn token_in_literal<'t>(
    text: &'t str,
    start: usize,
    before: &str,
) -> Option<(usize, &'t str)> {
    literal::token_in_value(text, start, literal::count_tokens(before))
}

/// The byte offset in `text` of the `n`-th name of the option statement
/// starting at `start` (where an option name protox could not resolve is).
pub(crate) fn name_in_statement(text: &str, start: usize, n: usize) -> Option<(usize, &str)> {
    literal::name_in_header(text, start, n)
}

mod literal;
