//! Build-time code generation for Keel.
//!
//! `keel-rpc-codegen` compiles `.proto` files with [protox] (no `protoc` binary),
//! reads Keel's annotations (`keel.v1.service` / `keel.v1.method`, see
//! `codegen/proto/keel/v1/options.proto`) with [prost-reflect], and generates, into one
//! module per protobuf package:
//!
//! - the messages, tonic servers and clients, exactly as `tonic-prost-build`
//!   writes them;
//! - per service, a policy table (`USER_SERVICE_POLICY`) that holds every
//!   method's resolved auth rule and metric labels, with a `match` on the
//!   request path to find a method's entry without allocating;
//! - per service, a constructor (`user_service(handler, &keel)`) that returns
//!   the tonic server already behind Keel's server pipeline (its steps are
//!   listed once, in the runtime's `keel_rpc::pipeline` module docs);
//! - per service, a client constructor (`connect_user_service(channel,
//!   &client)`) that returns the tonic client over Keel's client layer
//!   (bearer token, trace context, default deadline, client metrics);
//! - per message, its `impl keel_rpc::validate::Validate` from the standard
//!   `buf.validate` rules (`buf/validate/validate.proto`, bundled: see
//!   [`VALIDATE_PROTO`]); the servers of services whose methods' inputs have
//!   rules decode with `keel_rpc::validate::ValidatingCodec`.
//!
//! Annotation mistakes fail the build with the file, line and column of the
//! offending option.
//!
//! Use it from `build.rs`:
//!
//! ```no_run
//! fn main() {
//!     let generated = keel_rpc_codegen::configure().compile(&["proto/user/v1/user.proto"], &["proto"]);
//!     if let Err(error) = generated {
//!         // `file:line:column: message` per problem (`?` from `main` would print Debug).
//!         eprintln!("error: {error}");
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! and include the result like any tonic code:
//!
//! ```ignore
//! pub mod user_v1 {
//!     include!(concat!(env!("OUT_DIR"), "/user.v1.rs"));
//! }
//! ```
//!
//! [protox]: https://docs.rs/protox
//! [prost-reflect]: https://docs.rs/prost-reflect

// The build.rs example above is a whole `main`, as a build script is.
#![allow(clippy::needless_doctest_main)]

mod compile;
mod emit;
mod error;
mod http;
mod ident;
mod locate;
mod openapi;
mod redact;
mod spec;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{Diagnostic, Error};
pub use http::{HttpRoute, PathTemplate, Segment};
pub use spec::{
    Access, Criticality, MethodSpec, RESERVED_LABELS, RateKey, RateLimit, RetryPolicy, ServiceSpec,
    StreamLimits,
};

/// The annotation vocabulary, bundled so users need not put it on their
/// include path. Import it as `keel/v1/options.proto`.
pub const OPTIONS_PROTO: &str = include_str!("../proto/keel/v1/options.proto");

/// Name under which [`OPTIONS_PROTO`] is imported.
pub const OPTIONS_PROTO_NAME: &str = "keel/v1/options.proto";

/// The standard validation rules (protovalidate's
/// `buf/validate/validate.proto`, Apache-2.0, Buf Technologies), bundled
/// like Keel's own options. Import it as `buf/validate/validate.proto`.
pub const VALIDATE_PROTO: &str = include_str!("../proto/buf/validate/validate.proto");

/// Name under which [`VALIDATE_PROTO`] is imported.
pub const VALIDATE_PROTO_NAME: &str = "buf/validate/validate.proto";

/// The standard HTTP mapping options (`google.api.http`): the files the
/// ecosystem imports as `google/api/annotations.proto` and
/// `google/api/http.proto`, with the same messages and numbers, bundled.
pub const HTTP_PROTOS: [(&str, &str); 2] = [
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
];

/// File name of the encoded `FileDescriptorSet` written beside the generated
/// code (all compiled files and their imports, custom options included), and
/// exposed by every generated module as `FILE_DESCRIPTOR_SET` for reflection.
pub const DESCRIPTOR_SET_FILE: &str = "keel_descriptor_set.bin";

/// Starts a code generation [`Builder`] with the defaults: server and client
/// code, output to `OUT_DIR`, runtime crate `::keel_rpc`.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        build_server: true,
        build_client: true,
        emit_rerun_if_changed: None,
        runtime_crate: "::keel_rpc".to_owned(),
        header: None,
    }
}

/// Configures and runs code generation. Created by [`configure`].
#[derive(Clone, Debug)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    build_server: bool,
    build_client: bool,
    emit_rerun_if_changed: Option<bool>,
    runtime_crate: String,
    header: Option<String>,
}

/// What one [`Builder::compile`] call wrote.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The Rust files written, one per protobuf package that has a requested file.
    pub files: Vec<PathBuf>,
    /// The encoded descriptor set written beside them ([`DESCRIPTOR_SET_FILE`]).
    pub descriptor_set: PathBuf,
    /// Fully qualified names of the services that got a policy table.
    pub services: Vec<String>,
    /// Their resolved policies, as the tables say them: for review
    /// (`cargo xtask policy`) and tools.
    pub policies: Vec<ServiceSpec>,
    /// The OpenAPI 3.1 documents written, one per service with HTTP routes
    /// (`user.v1.UserService.openapi.json`).
    pub openapi: Vec<PathBuf>,
}

impl Builder {
    /// Directory to write the generated files to. Defaults to `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Generate tonic servers and the Keel wrapping constructors (default `true`).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Generate tonic clients (default `true`).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Print `cargo:rerun-if-changed` for every input. Defaults to on when
    /// `OUT_DIR` is set, that is, when running from a build script.
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = Some(enable);
        self
    }

    /// Path of the Keel runtime crate in generated code (default `::keel_rpc`),
    /// for crates that re-export it under another name.
    pub fn runtime_crate(mut self, path: impl Into<String>) -> Self {
        self.runtime_crate = path.into();
        self
    }

    /// A comment line put at the top of every generated file, after the
    /// `@generated` marker (for example, how to regenerate it).
    pub fn header(mut self, line: impl Into<String>) -> Self {
        self.header = Some(line.into());
        self
    }

    /// Compiles `protos` (paths, each under one of `includes`) and writes the
    /// generated modules.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Generated, Error> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_owned()).collect();
        let out_dir = compile::out_dir(self.out_dir.as_deref())?;
        let parsed = compile::parse(protos, includes)?;
        let runtime = compile::runtime_path(&self.runtime_crate)?;
        let resolved = compile::resolve(&parsed, &runtime)?;
        let modules = compile::generate(&self, &parsed, &resolved, runtime)?;
        let generated =
            compile::write(&out_dir, self.header.as_deref(), &parsed, resolved, modules)?;
        if self.emits_rerun_if_changed() {
            parsed.rerun_if_changed();
        }
        Ok(generated)
    }

    /// Whether to print `cargo:rerun-if-changed`: as set, else when running
    /// from a build script (`OUT_DIR` is set).
    fn emits_rerun_if_changed(&self) -> bool {
        self.emit_rerun_if_changed
            .unwrap_or_else(|| std::env::var_os("OUT_DIR").is_some())
    }
}
