//! The steps of [`Builder::compile`](crate::Builder::compile), in order, as
//! prost-build's `compile_protos → compile_fds → generate`:
//!
//! 1. `parse`: protox compiles the protos (source info kept, no `protoc`)
//!    into a descriptor pool and an encoded descriptor set;
//! 2. `resolve`: Keel's annotations and the `buf.validate` rules, read from
//!    that pool and checked, every problem of both at once;
//! 3. `generate`: prost-build, with Keel's service generator around
//!    tonic's, writes each package's module;
//! 4. `write`: each requested package's file, the descriptor set beside
//!    them and the OpenAPI documents.

mod generate;
mod parse;
mod resolve;
mod write;

use proc_macro2::TokenStream;

use crate::error::Error;

pub(crate) use generate::generate;
pub(crate) use parse::parse;
pub(crate) use resolve::resolve;
pub(crate) use write::{out_dir, write};

/// The runtime crate's path (`::keel_rpc`) as the generated code names it.
pub(crate) fn runtime_path(runtime_crate: &str) -> Result<TokenStream, Error> {
    runtime_crate
        .parse()
        .map_err(|_| Error::RuntimeCrate(runtime_crate.to_owned()))
}
