//! [`Protocol`]: how a call reached the server, the server metrics'
//! `protocol` label.

/// How a call reached its method: as gRPC, as gRPC-Web (translated to gRPC
/// on the port, `http.grpc_web`), or as REST/JSON (a `google.api.http`
/// route). The translating steps put it in the request's extensions; a call
/// without one came as gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc = 0,
    GrpcWeb = 1,
    Rest = 2,
}

impl Protocol {
    /// How many there are: each method has a slot of counts per protocol.
    pub(crate) const COUNT: usize = 3;

    pub(crate) const ALL: [Protocol; Protocol::COUNT] =
        [Protocol::Grpc, Protocol::GrpcWeb, Protocol::Rest];

    /// The protocol of a request, from its extensions.
    #[inline]
    pub(crate) fn of(extensions: &http::Extensions) -> Protocol {
        extensions
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc)
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc_web",
            Protocol::Rest => "rest",
        }
    }

    /// The index of the counts of `method`'s calls by this protocol.
    #[inline]
    pub(crate) fn slot(self, method: usize) -> usize {
        method * Protocol::COUNT + self as usize
    }
}
