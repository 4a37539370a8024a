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
//!   the tonic server already behind Keel's server pipeline (tracing,
//!   metrics, auth, panic recovery);
//! - per service, a client constructor (`user_service_client(channel,
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
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     keel_rpc_codegen::configure().compile(&["proto/user/v1/user.proto"], &["proto"])?;
//!     Ok(())
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

#![warn(missing_docs)]

mod annotations;
mod error;
mod generate;
mod http;
mod ident;
mod openapi;
mod redact;
mod validate;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost_build::{Module, Service, ServiceGenerator};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

pub use annotations::{
    Access, MethodSpec, RESERVED_LABELS, RateKey, RateLimit, RetryPolicy, ServiceSpec,
};
pub use error::{Diagnostic, Error};
pub use http::{HttpRoute, PathTemplate, Segment};

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

    /// Path of the Keel runtime crate in generated code (default `::keel`),
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
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };

        let mut resolver = ChainFileResolver::new();
        resolver.add(BundledOptions);
        for include in &includes {
            resolver.add(IncludeFileResolver::new(include.clone()));
        }
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true).include_source_info(true);
        compiler
            .open_files(protos)
            .map_err(|e| locate_on_disk(Error::from_protox(e), &includes))?;

        let paths: HashMap<String, PathBuf> = compiler
            .files()
            .filter_map(|f| Some((f.name().to_owned(), f.path()?.to_owned())))
            .collect();
        let requested: HashSet<String> = compiler
            .files()
            .filter(|f| !f.is_import())
            .map(|f| f.name().to_owned())
            .collect();

        let encoded = compiler.encode_file_descriptor_set();
        let pool = compiler.descriptor_pool();
        let files: Vec<_> = pool
            .files()
            .filter(|f| requested.contains(f.name()))
            .collect();
        let runtime: proc_macro2::TokenStream = self
            .runtime_crate
            .parse()
            .map_err(|_| Error::RuntimeCrate(self.runtime_crate.clone()))?;
        // Every annotation problem at once, Keel's and the validation rules'.
        let (specs, validation) = match (
            annotations::resolve(&pool, &files, &paths),
            validate::generate(&pool, &files, &paths, &runtime),
        ) {
            (Ok(specs), Ok(validation)) => (specs, validation),
            (specs, validation) => {
                let mut all = specs.err().unwrap_or_default();
                all.extend(validation.err().unwrap_or_default());
                return Err(Error::Annotations(all));
            }
        };
        let mut specs = specs;
        let validated = validated_services(&files, &validation.with_rules, &mut specs);
        let redacted = redact::find(&files);

        // prost-build needs every file (imports too) to resolve types; only
        // the requested packages' modules are written.
        let fds = compiler.file_descriptor_set();
        let packages: HashSet<String> = fds
            .file
            .iter()
            .filter(|f| requested.contains(f.name()))
            .map(|f| f.package().to_owned())
            .collect();

        let services = specs.iter().map(|s| s.full_name.clone()).collect();
        let policies = specs.clone();
        let generator = KeelGenerator {
            tonic: tonic_prost_build::configure()
                .build_server(self.build_server)
                .build_client(self.build_client)
                .service_generator(),
            validating: Validating {
                client: tonic_prost_build::configure()
                    .build_server(false)
                    .build_client(self.build_client)
                    .service_generator(),
                server: tonic_prost_build::configure()
                    .build_server(self.build_server)
                    .build_client(false)
                    .codec_path(format!("{}::validate::ValidatingCodec", self.runtime_crate))
                    .service_generator(),
                services: validated,
            },
            specs: specs
                .into_iter()
                .map(|s| (s.full_name.clone(), s))
                .collect(),
            server: self.build_server,
            client: self.build_client,
            runtime,
        };
        let mut config = prost_build::Config::new();
        config.service_generator(Box::new(generator));
        if !redacted.is_empty() {
            config.skip_debug(redacted.iter().map(|r| r.path.as_str()));
        }
        let requests = fds
            .file
            .into_iter()
            .map(|f| (Module::from_protobuf_package_name(f.package()), f))
            .collect();
        let modules = config.generate(requests)?;

        std::fs::create_dir_all(&out_dir)?;
        let mut written = Vec::new();
        for (module, code) in modules {
            let package = module.parts().collect::<Vec<_>>().join(".");
            if !packages.contains(&package) {
                continue;
            }
            let path = out_dir.join(module.to_file_name_or("_"));
            let mut text = String::from("// @generated by keel-rpc-codegen. Do not edit.\n");
            if let Some(line) = &self.header {
                text.push_str(&format!("// {line}\n"));
            }
            text.push_str(code.trim_start_matches("// This file is @generated by prost-build.\n"));
            let own: Vec<&redact::Redacted> =
                redacted.iter().filter(|r| r.package == package).collect();
            if !own.is_empty() {
                text.push_str(&redact::debug_impls(&own));
            }
            if let Some(code) = validation.code.get(&package) {
                text.push('\n');
                text.push_str(code);
            }
            text.push_str(&generate::descriptor_set_const(DESCRIPTOR_SET_FILE));
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&path, text)?;
            }
            written.push(path);
        }
        written.sort();
        let mut openapi = Vec::new();
        for service in files.iter().flat_map(|f| f.services()) {
            let Some(spec) = policies.iter().find(|s| s.full_name == service.full_name()) else {
                continue;
            };
            if let Some(document) = openapi::document(&service, spec) {
                let path = out_dir.join(format!("{}.openapi.json", service.full_name()));
                let text = format!("{:#}\n", document);
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    std::fs::write(&path, text)?;
                }
                openapi.push(path);
            }
        }
        let descriptor_set = out_dir.join(DESCRIPTOR_SET_FILE);
        if std::fs::read(&descriptor_set).ok().as_deref() != Some(encoded.as_slice()) {
            std::fs::write(&descriptor_set, &encoded)?;
        }

        let emit = self
            .emit_rerun_if_changed
            .unwrap_or_else(|| std::env::var_os("OUT_DIR").is_some());
        if emit {
            for name in &requested {
                if let Some(path) = paths.get(name) {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            for include in &includes {
                println!("cargo:rerun-if-changed={}", include.display());
            }
        }
        Ok(Generated {
            files: written,
            descriptor_set,
            services,
            policies,
            openapi,
        })
    }
}

/// The services whose methods' inputs have validation rules, and the tonic
/// generators they are written with: their servers decode with
/// `ValidatingCodec`, their clients with tonic's own codec.
struct Validating {
    client: Box<dyn ServiceGenerator>,
    server: Box<dyn ServiceGenerator>,
    services: HashSet<String>,
}

/// The services (full names) with a method whose input has rules; marks
/// those methods `validated` in `specs`.
fn validated_services(
    files: &[prost_reflect::FileDescriptor],
    with_rules: &HashSet<String>,
    specs: &mut [annotations::ServiceSpec],
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

/// Wraps tonic's service generator and appends Keel's code for each service.
struct KeelGenerator {
    tonic: Box<dyn ServiceGenerator>,
    validating: Validating,
    specs: HashMap<String, annotations::ServiceSpec>,
    server: bool,
    client: bool,
    runtime: proc_macro2::TokenStream,
}

impl ServiceGenerator for KeelGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let rust_name = service.name.clone();
        if self.validating.services.contains(&full_name) {
            self.validating.client.generate(service.clone(), buf);
            self.validating.server.generate(service, buf);
        } else {
            self.tonic.generate(service, buf);
        }
        if let Some(spec) = self.specs.get(&full_name) {
            buf.push('\n');
            buf.push_str(&generate::service(
                spec,
                &rust_name,
                self.server,
                self.client,
                &self.runtime,
            ));
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        self.tonic.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.tonic.finalize_package(package, buf);
    }
}

/// Serves the bundled `keel/v1/options.proto`.
struct BundledOptions;

impl FileResolver for BundledOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            File::from_source(name, OPTIONS_PROTO)
        } else if name == VALIDATE_PROTO_NAME {
            File::from_source(name, VALIDATE_PROTO)
        } else if let Some((_, source)) = HTTP_PROTOS.iter().find(|(n, _)| *n == name) {
            File::from_source(name, source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Rewrites a diagnostic's file from its import name to the path on disk.
fn locate_on_disk(error: Error, includes: &[PathBuf]) -> Error {
    match error {
        Error::Proto(mut d) => {
            if let Some(path) = includes
                .iter()
                .map(|i| i.join(&d.file))
                .find(|p| p.is_file())
            {
                d.file = path;
            }
            Error::Proto(d)
        }
        other => other,
    }
}
