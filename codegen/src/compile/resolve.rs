//! Step 2, `resolve`: Keel's annotations (`spec`) and the `buf.validate`
//! rules (`validate`) of the requested files, read from the pool and
//! checked, every problem of both at once; then the methods whose requests
//! are validated are marked, and the messages whose `Debug` is redacted found.

use std::collections::HashSet;

use proc_macro2::TokenStream;

use super::parse::Parsed;
use crate::error::Error;
use crate::redact::{self, Redacted};
use crate::spec::{self, ServiceSpec};
use crate::validate::{self, Validation};

/// What the annotations and rules of the requested files resolved to.
pub(crate) struct Resolved {
    /// Every service's policies, in the order of the files, methods whose
    /// input has rules marked `validated`.
    pub(crate) specs: Vec<ServiceSpec>,
    /// Each package's validation code, and the messages with rules.
    pub(crate) validation: Validation,
    /// The services (full names) with a method whose input has rules.
    pub(crate) validated: HashSet<String>,
    /// The messages with a `debug_redact` field.
    pub(crate) redacted: Vec<Redacted>,
}

/// Resolves the policies and validation rules of `parsed`'s requested
/// files; `runtime` is the runtime crate's path in the validation code.
pub(crate) fn resolve(parsed: &Parsed, runtime: &TokenStream) -> Result<Resolved, Error> {
    let Parsed {
        pool, files, paths, ..
    } = parsed;
    // Every annotation problem at once, Keel's and the validation rules'.
    let (specs, validation) = match (
        spec::resolve(pool, files, paths),
        validate::generate(pool, files, paths, runtime),
    ) {
        (Ok(specs), Ok(validation)) => (specs, validation),
        (specs, validation) => {
            let mut all = specs.err().unwrap_or_default();
            all.extend(validation.err().unwrap_or_default());
            return Err(Error::Annotations(all));
        }
    };
    let mut specs = specs;
    let validated = validated_services(files, &validation.with_rules, &mut specs);
    let redacted = redact::find(files);
    Ok(Resolved {
        specs,
        validation,
        validated,
        redacted,
    })
}

/// The services (full names) with a method whose input has rules; marks
/// those methods `validated` in `specs`.
fn validated_services(
    files: &[prost_reflect::FileDescriptor],
    with_rules: &HashSet<String>,
    specs: &mut [ServiceSpec],
) -> HashSet<String> {
    let mut found = HashSet::new();
    for service in files.iter().flat_map(|f| f.services()) {
        let mut spec = specs
            .iter_mut()
            .find(|s| s.full_name == service.full_name());
        for method in service.methods() {
            if with_rules.contains(method.input().full_name()) {
                found.insert(service.full_name().to_owned());
                if let Some(m) = spec
                    .as_deref_mut()
                    .and_then(|s| s.methods.iter_mut().find(|m| m.name == method.name()))
                {
                    m.validated = true;
                }
            }
        }
    }
    found
}
