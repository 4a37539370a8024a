//! Step 3, `generate`: prost-build writes each package's module: its
//! messages, and, through Keel's service generator around tonic's, each
//! service's tonic server and client followed by Keel's code for it
//! (`emit`).

use std::collections::{HashMap, HashSet};

use prost_build::{Module, Service, ServiceGenerator};

use super::parse::Parsed;
use super::resolve::Resolved;
use crate::error::Error;
use crate::{Builder, emit, spec};

/// The modules of every package (imports too), by module.
pub(crate) fn generate(
    builder: &Builder,
    parsed: &Parsed,
    resolved: &Resolved,
    runtime: proc_macro2::TokenStream,
) -> Result<HashMap<Module, String>, Error> {
    let generator = KeelGenerator {
        tonic: tonic_prost_build::configure()
            .build_server(builder.build_server)
            .build_client(builder.build_client)
            .service_generator(),
        validating: Validating {
            client: tonic_prost_build::configure()
                .build_server(false)
                .build_client(builder.build_client)
                .service_generator(),
            server: tonic_prost_build::configure()
                .build_server(builder.build_server)
                .build_client(false)
                .codec_path(format!(
                    "{}::validate::ValidatingCodec",
                    builder.runtime_crate
                ))
                .service_generator(),
            services: resolved.validated.clone(),
        },
        specs: resolved
            .specs
            .iter()
            .map(|s| (s.full_name.clone(), s.clone()))
            .collect(),
        server: builder.build_server,
        client: builder.build_client,
        runtime,
    };
    let mut config = prost_build::Config::new();
    config.service_generator(Box::new(generator));
    if !resolved.redacted.is_empty() {
        config.skip_debug(resolved.redacted.iter().map(|r| r.path.as_str()));
    }
    let requests = parsed
        .fds
        .file
        .iter()
        .cloned()
        .map(|f| (Module::from_protobuf_package_name(f.package()), f))
        .collect();
    Ok(config.generate(requests)?)
}

/// The services whose methods' inputs have validation rules, and the tonic
/// generators they are written with: their servers decode with
/// `ValidatingCodec`, their clients with tonic's own codec.
struct Validating {
    client: Box<dyn ServiceGenerator>,
    server: Box<dyn ServiceGenerator>,
    services: HashSet<String>,
}

/// Wraps tonic's service generator and appends Keel's code for each service.
struct KeelGenerator {
    tonic: Box<dyn ServiceGenerator>,
    validating: Validating,
    specs: HashMap<String, spec::ServiceSpec>,
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
            buf.push_str(&emit::service(
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
