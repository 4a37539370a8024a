//! gRPC interop for Keel: the standard `grpc.testing.TestService` served
//! through Keel's generated, wrapped server, and a client that runs the
//! standard interop cases against it (or against any interop server).
//!
//! - [`server`]: the handler, the Keel configuration and
//!   [`InteropServer::serve`](server::InteropServer::serve); binary
//!   `interop-server` (`--port`, default 10000, on 127.0.0.1 unless `--host`).
//! - [`client`]: the cases ([`TestCase`](client::TestCase)) and
//!   [`Client::run`](client::Client::run); binary `interop-client`
//!   (`--server_host`, `--server_port`, `--test_case`).
//! - [`echo`]: the tower layer that echoes `x-grpc-test-echo-trailing-bin`
//!   into the trailers, which tonic handlers cannot set.
//!
//! By hand (two terminals):
//!
//! ```sh
//! cargo run -p interop --bin interop-server                   # 127.0.0.1:10000
//! cargo run -p interop --bin interop-client -- --test_case=all
//! cargo run -p interop --bin interop-client -- --server_port=10000 --test_case=ping_pong
//! ```
//!
//! Another implementation's interop client can drive the server the same way
//! (`--server_host=127.0.0.1 --server_port=10000 --use_tls=false`), and this
//! client can test another implementation's server.
//!
//! The protos are upstream's `grpc/testing/{test,messages,empty}.proto`, with
//! every service annotated public (`proto/grpc/testing/test.proto` lists the
//! differences); `cargo xtask gen` generates [`grpc_testing`].

pub mod client;
pub mod echo;
pub mod server;

/// Generated from `proto/grpc/testing/test.proto` by `cargo xtask gen`.
pub mod grpc_testing {
    include!("gen/grpc.testing.rs");
}

/// Parses an interop boolean flag value (`--use_tls=false`): `true` or
/// `false`, as the interop runners pass them.
pub fn parse_bool_flag(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}
