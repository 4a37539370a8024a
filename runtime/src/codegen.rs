//! What the code `keel-rpc-codegen` writes is made of, in one place, as
//! tonic's `codegen` module is: the policy tables (one [`ServicePolicy`] per
//! service, one [`MethodPolicy`] per method) and the rules in them.
//!
//! Hand-written code seldom names these: a service hands its generated
//! `USER_SERVICE_POLICY` to [`Keel::new`](crate::Keel::new), and a layer of
//! its own reads the called method from
//! [`CalledMethod`](crate::pipeline::CalledMethod). Tests that build a
//! policy by hand start from [`MethodPolicy::new`].
//!
//! ```
//! use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
//!
//! static METHODS: [MethodPolicy; 1] = [MethodPolicy::new(
//!     "GetUser",
//!     "/user.v1.UserService/GetUser",
//!     MethodKind::Unary,
//!     Access::Public,
//! )];
//! static POLICY: ServicePolicy = ServicePolicy {
//!     name: "user.v1.UserService",
//!     methods: &METHODS,
//!     route: |path| (path == "/user.v1.UserService/GetUser").then_some(0),
//! };
//! assert_eq!(POLICY.route_index("/user.v1.UserService/GetUser"), Some(0));
//! ```

pub use crate::policy::{
    Access, Criticality, HttpRoute, MethodKind, MethodPolicy, PathSegment, RateKey, RateLimit,
    RetryPolicy, ServicePolicy, StreamLimits,
};
