//! gRPC on the wire, as far as Keel reads and writes it itself (as tonic's
//! `metadata/`, `status.rs` and `codec/` are for tonic):
//!
//! - the names of the metadata it reads or writes (`metadata.rs`);
//! - the request headers read on every call, in one walk
//!   ([`CallHeaders`]);
//! - `grpc-timeout` values (`timeout.rs`);
//! - the code of a `grpc-status`, and a `grpc-message` cut to a length
//!   (`status.rs`);
//! - length-prefixed messages: counted across data frames, framed and
//!   taken out of a buffer (`messages.rs`).
//!
//! It depends on nothing else of Keel's: auth, telemetry, metrics, the
//! pipeline, the clients and REST read and write the wire through it, and
//! what each makes of it (an auth error, a deadline, a label) stays with it.

mod call_headers;
mod messages;
mod metadata;
mod status;
mod timeout;

pub(crate) use call_headers::CallHeaders;
pub(crate) use messages::{
    MessageCounter, TooLarge, encode_message, single_message, split_message,
};
pub(crate) use metadata::{GRPC_TIMEOUT, KEEL_CRITICALITY, PUSHBACK};
pub use metadata::{TRACEPARENT, TRACESTATE};
#[cfg(test)]
pub(crate) use status::CUT_MARK;
pub(crate) use status::{GRPC_MESSAGE, cut_message, status_code};
pub(crate) use timeout::{decode_timeout, encode_timeout};
