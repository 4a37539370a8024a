//! Serving behaviour operators rely on: graceful shutdown (lame duck, drain,
//! deadline), second signal, panics, message limits, health and reflection,
//! call deadlines, connection limits and timeouts, retries, request rules,
//! and the binary itself.
//!
//! One test binary with a module per concept, not a `tests/*.rs` each: every
//! test binary links the whole stack. Their shared server is in [`support`];
//! `common` holds the helpers of every user-service test binary.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod binary;
mod connections;
mod deadlines;
mod health;
mod limits;
mod panics;
mod reflection;
mod retries;
mod shutdown;
mod validation;
