//! Resolves the policies of every service of the requested files: each
//! method's own annotation block over its service's (method over service,
//! fail closed when neither says anything), its HTTP routes, its own options
//! of other packages, and its retry policy; every problem is collected.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use prost_reflect::{
    DescriptorPool, ExtensionDescriptor, FileDescriptor, MethodDescriptor, ServiceDescriptor,
};

use super::check;
use super::read::{Block, read_block};
use super::{Access, MethodSpec, RetryPolicy, ServiceSpec, StreamLimits};
use crate::error::Diagnostic;
use crate::http::{self, HttpRoute};
use crate::locate::{Locator, Step};

/// `ServiceDescriptorProto.options` and `MethodDescriptorProto.options` field numbers.
const SERVICE_OPTIONS_FIELD: i32 = 3;
const METHOD_OPTIONS_FIELD: i32 = 4;

/// `MethodOptions.idempotency_level` values that make a method retryable.
const NO_SIDE_EFFECTS: i32 = 1;
const IDEMPOTENT: i32 = 2;

/// Resolves the policies of every service in `files`, collecting every
/// annotation error instead of stopping at the first.
pub(crate) fn resolve(
    pool: &DescriptorPool,
    files: &[FileDescriptor],
    paths: &HashMap<String, PathBuf>,
) -> Result<Vec<ServiceSpec>, Vec<Diagnostic>> {
    let service_ext = pool.get_extension_by_name("keel.v1.service");
    let method_ext = pool.get_extension_by_name("keel.v1.method");
    let http_ext = pool.get_extension_by_name("google.api.http");
    let mut diagnostics = Vec::new();
    let mut specs = Vec::new();
    // Every route of the build so far, by the method that has it.
    let mut routes: Vec<(String, HttpRoute)> = Vec::new();
    for file in files {
        let locate = Locator::new(file, paths);
        for service in file.services() {
            specs.push(resolve_service(
                &service,
                Extensions {
                    service: service_ext.as_ref(),
                    method: method_ext.as_ref(),
                    http: http_ext.as_ref(),
                },
                &locate,
                &mut routes,
                &mut diagnostics,
            ));
        }
    }
    if diagnostics.is_empty() {
        Ok(specs)
    } else {
        Err(diagnostics)
    }
}

/// The options `resolve_service` reads, when their files are imported.
struct Extensions<'a> {
    service: Option<&'a ExtensionDescriptor>,
    method: Option<&'a ExtensionDescriptor>,
    http: Option<&'a ExtensionDescriptor>,
}

fn resolve_service(
    service: &ServiceDescriptor,
    ext: Extensions<'_>,
    locate: &Locator<'_>,
    routes: &mut Vec<(String, HttpRoute)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> ServiceSpec {
    let (service_ext, method_ext) = (ext.service, ext.method);
    // A problem at a field (`within`) of the option at `path`.
    let mut report = |path: &[i32], within: &[Step<'_>], message: String| {
        diagnostics.push(locate.at_field(path, within, message));
    };
    let mut service_path = service.path().to_vec();
    service_path.push(SERVICE_OPTIONS_FIELD);
    if let Some(ext) = service_ext {
        service_path.push(ext.number() as i32);
    }
    let service_block = read_block(&service.options(), service_ext, &mut |within, message| {
        report(&service_path, within, message)
    });

    let methods = service
        .methods()
        .map(|method| {
            let mut path = method.path().to_vec();
            path.push(METHOD_OPTIONS_FIELD);
            if let Some(ext) = method_ext {
                path.push(ext.number() as i32);
            }
            let block = read_block(&method.options(), method_ext, &mut |within, message| {
                report(&path, within, message)
            });
            if let Some(problem) = check::streaming_retry(&method, &block) {
                report(&path, &[("retry", 0)], problem);
            }
            if let Some((field, problem)) = check::stream_limit_problem(&method, &block) {
                report(&path, &[(field, 0)], problem);
            }
            let mut spec = merge(&method, &service_block, block);
            let mut http_path = method.path().to_vec();
            http_path.push(METHOD_OPTIONS_FIELD);
            if let Some(ext) = ext.http {
                http_path.push(ext.number() as i32);
            }
            spec.http = http::routes(&method, ext.http, &mut |within, problem| {
                report(&http_path, within, problem)
            });
            let name = format!("{}/{}", service.full_name(), method.name());
            for route in &spec.http {
                if let Some(other) = http::clash(routes, route) {
                    report(
                        &http_path,
                        &[],
                        format!("google.api.http: {route} is also a route of {other}"),
                    );
                }
                routes.push((name.clone(), route.clone()));
            }
            if let Some(problem) = check::timeout_problem(&spec) {
                report(&path, &[("timeout", 0)], problem);
            }
            if let Some(problem) = spec
                .rate_limit
                .as_ref()
                .and_then(|r| check::key_problem(r, &spec.access))
            {
                report(&path, &[("rate_limit", 0), ("key", 0)], problem);
            }
            spec
        })
        .collect();
    ServiceSpec {
        full_name: service.full_name().to_owned(),
        methods,
    }
}

/// Applies the service-level defaults under a method's own block.
fn merge(method: &MethodDescriptor, service: &Block, own: Block) -> MethodSpec {
    let stream = stream_limits(method, service, &own);
    let access = own
        .auth
        .or_else(|| service.auth.clone())
        .unwrap_or(Access::Token(Vec::new()));
    let mut labels: BTreeMap<String, String> = service.labels.iter().cloned().collect();
    labels.extend(own.labels);
    MethodSpec {
        name: method.name().to_owned(),
        client_streaming: method.is_client_streaming(),
        server_streaming: method.is_server_streaming(),
        access,
        labels,
        timeout: own.timeout.or(service.timeout),
        max_timeout: own.max_timeout.or(service.max_timeout),
        max_concurrency: own.max_concurrency.or(service.max_concurrency),
        rate_limit: own.rate_limit.or_else(|| service.rate_limit.clone()),
        retry: retry_of(method, own.retry.or_else(|| service.retry.clone())),
        stream,
        criticality: own.criticality.or(service.criticality).unwrap_or_default(),
        options: custom_options(method),
        validated: false,
        http: Vec::new(),
        input: method.input().full_name().to_owned(),
        output: method.output().full_name().to_owned(),
    }
}

/// The stream limits of `method`, its own over the service's; the
/// service's apply only where they can (a unary method has none, and only
/// a client stream is counted).
fn stream_limits(method: &MethodDescriptor, service: &Block, own: &Block) -> StreamLimits {
    if !(method.is_client_streaming() || method.is_server_streaming()) {
        return StreamLimits::default();
    }
    StreamLimits {
        max_duration: own.max_stream_duration.or(service.max_stream_duration),
        idle_timeout: own.stream_idle_timeout.or(service.stream_idle_timeout),
        max_messages: (own.max_stream_messages.or(service.max_stream_messages))
            .filter(|_| method.is_client_streaming()),
    }
}

/// The message-typed extensions of `method`'s options that are not Keel's,
/// encoded, by full name. Scalar extensions (of other tools, often) are
/// left out: a layer decodes a message.
fn custom_options(method: &MethodDescriptor) -> Vec<(String, Vec<u8>)> {
    let options = method.options();
    let mut found: Vec<(String, Vec<u8>)> = options
        .extensions()
        .filter(|(ext, _)| !ext.full_name().starts_with("keel.v1."))
        .filter_map(|(ext, value)| {
            Some((
                ext.full_name().to_owned(),
                prost::Message::encode_to_vec(value.as_message()?),
            ))
        })
        .collect();
    found.sort();
    found
}

/// The retry policy of `method`: the one annotated, else the default of an
/// idempotent method; never one for a streaming method.
fn retry_of(method: &MethodDescriptor, annotated: Option<RetryPolicy>) -> Option<RetryPolicy> {
    if method.is_client_streaming() || method.is_server_streaming() {
        return None;
    }
    let idempotency = method
        .options()
        .get_field_by_name("idempotency_level")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    annotated.or_else(|| {
        matches!(idempotency, NO_SIDE_EFFECTS | IDEMPOTENT).then(RetryPolicy::idempotent_default)
    })
}
