//! Source positions of options: a descriptor path to the `file:line:column`
//! a diagnostic points at (from the source info protox keeps), shared by
//! the annotation readers and the validation rules.

use std::collections::HashMap;
use std::path::PathBuf;

use prost_reflect::FileDescriptor;

use crate::error::Diagnostic;

/// Finds the source position of a descriptor path in a file.
pub(crate) struct Locator<'a> {
    pub(crate) file: &'a FileDescriptor,
    pub(crate) paths: &'a HashMap<String, PathBuf>,
}

impl Locator<'_> {
    /// A diagnostic at the innermost recorded location enclosing `path`.
    pub(crate) fn at(&self, path: &[i32], message: String) -> Diagnostic {
        let name = self.file.name();
        let file = self
            .paths
            .get(name)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(name));
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
            file,
            line: span.first().map_or(0, |l| *l as usize + 1),
            column: span.get(1).map_or(0, |c| *c as usize + 1),
            message,
        }
    }
}
