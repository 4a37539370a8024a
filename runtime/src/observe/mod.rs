//! Observing a call as its bodies go by: the core the server pipeline, the
//! generated clients' layer and tracing share.
//!
//! A gRPC call's messages and outcome are only visible in its HTTP/2
//! bodies: each message is length-prefixed in the data frames (split
//! anywhere), and the code is in the trailers' `grpc-status` (or in the
//! headers of a trailers-only response). So:
//!
//! - the request side ([`CountingBody`]) counts the messages a call carries,
//!   and refuses one over the size limit before anything decodes it (and,
//!   on a server, a request that does not arrive in time: `arrival.rs`);
//! - the response side ([`progress`]) says what each polled frame means for
//!   the call: a message went by, or the call ended with a code.
//!
//! What is done with that (metrics, span ends, token invalidation) belongs
//! to the side that observes: `pipeline::ResponseBody` on a server,
//! `client::ResponseBody` in a generated client.

mod arrival;
mod request;
mod response;

pub(crate) use arrival::{Arriving, StreamActivity};
pub use request::CountingBody;
pub(crate) use request::Tallies;
pub(crate) use response::{Progress, progress};
