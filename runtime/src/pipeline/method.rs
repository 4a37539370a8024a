//! What a layer of your own inside the pipeline learns of a call: its
//! method and resolved policy ([`CalledMethod`]), and the method's own
//! options, decoded once ([`OptionTable`]). Layers are added with
//! [`Keel::wrap_with`](crate::Keel::wrap_with) (the generated
//! `user_service_with`) and run after the pipeline's own steps, just
//! before the handler, inside its panic recovery.

use crate::policy::{MethodPolicy, ServicePolicy};

/// The method of a call, in the extensions of a request that reaches a
/// layer added with [`Keel::wrap_with`](crate::Keel::wrap_with).
#[derive(Clone, Copy, Debug)]
pub struct CalledMethod {
    /// The service's policy table.
    pub service: &'static ServicePolicy,
    /// The method's index in it.
    pub index: usize,
}

impl CalledMethod {
    /// The method of `request`, if it passed through a pipeline that
    /// exposes it (paths outside the policy have none).
    pub fn of<B>(request: &http::Request<B>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }

    /// The method's resolved policy.
    pub fn policy(&self) -> &'static MethodPolicy {
        &self.service.methods[self.index]
    }
}

/// One option of your own (an `extend google.protobuf.MethodOptions`
/// field of a message type) for each method of a service, decoded once, so
/// that a layer reads it per call without parsing.
///
/// ```
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Audit {
///     #[prost(string, tag = "1")]
///     action: String,
/// }
/// # static POLICY: keel_rpc::codegen::ServicePolicy = keel_rpc::codegen::ServicePolicy { name: "p.S", methods: &[
/// #   keel_rpc::codegen::MethodPolicy { options: &[("acme.v1.audit", b"\x0a\x04read")],
/// #     ..keel_rpc::codegen::MethodPolicy::new("Get", "/p.S/Get", keel_rpc::codegen::MethodKind::Unary, keel_rpc::codegen::Access::Public) }],
/// #   route: |_| Some(0) };
/// use keel_rpc::pipeline::{CalledMethod, OptionTable};
/// let audits = OptionTable::<Audit>::new(&POLICY, "acme.v1.audit").unwrap();
/// let get = CalledMethod { service: &POLICY, index: 0 };
/// assert_eq!(audits.get(get).map(|a| a.action.as_str()), Some("read"));
/// ```
#[derive(Debug)]
pub struct OptionTable<T> {
    service: &'static ServicePolicy,
    by_method: Box<[Option<T>]>,
}

/// An option in the policy table that does not decode as the type asked.
#[derive(Debug, thiserror::Error)]
#[error("option ({name}) of {path} does not decode as the type asked: {source}")]
pub struct OptionError {
    /// The option's full name.
    pub name: String,
    /// The method's path.
    pub path: &'static str,
    /// What decoding said.
    #[source]
    pub source: prost::DecodeError,
}

impl<T: prost::Message + Default> OptionTable<T> {
    /// Decodes option `name` (`"acme.v1.audit"`) of each of `service`'s
    /// methods that carries it.
    pub fn new(service: &'static ServicePolicy, name: &str) -> Result<Self, OptionError> {
        let by_method = (service.methods.iter())
            .map(|method| {
                method
                    .option::<T>(name)
                    .transpose()
                    .map_err(|source| OptionError {
                        name: name.to_owned(),
                        path: method.path,
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(OptionTable { service, by_method })
    }

    /// The option of `method`, if it is one of this table's service's and
    /// carries it.
    pub fn get(&self, method: CalledMethod) -> Option<&T> {
        if !std::ptr::eq(method.service, self.service) {
            return None;
        }
        self.by_method.get(method.index)?.as_ref()
    }

    /// The option of `request`'s method (see [`CalledMethod::of`]).
    pub fn for_request<B>(&self, request: &http::Request<B>) -> Option<&T> {
        self.get(CalledMethod::of(request)?)
    }
}
