//! Request validation: the standard `buf.validate` annotations
//! ([protovalidate]) of a method's input, checked before the handler runs.
//!
//! `keel-rpc-codegen` reads the rules of every message at build time and writes
//! an [`impl Validate`](Validate) for it: the standard rules become plain
//! Rust over the message's fields (no reflection, nothing parsed per
//! call), and CEL rules ([`CelRule`]) are compiled once, on first use. A
//! service with rules on some method's input decodes its requests with
//! [`ValidatingCodec`], which checks each message as tonic decodes it: a
//! unary request, and every message of a client or bidi stream. Services
//! without rules keep tonic's own codec and pay nothing.
//!
//! A message that breaks a rule never reaches the handler: the call is
//! answered `INVALID_ARGUMENT` with a `google.rpc.BadRequest` detail
//! listing every violation (the field path, the rule id as the reason, and
//! the rule's message). The value itself is never echoed, so a field with
//! `debug_redact` cannot leak through an error. A CEL rule that cannot be
//! evaluated (a type error, a missing field) answers `INTERNAL` with
//! nothing internal in the message; the cause is logged.
//!
//! ```
//! use keel_rpc::validate::{Validate, Violations};
//!
//! // What codegen writes for `string name = 1 [(buf.validate.field).string.min_len = 1];`
//! struct CreateUserRequest {
//!     name: String,
//! }
//!
//! impl Validate for CreateUserRequest {
//!     fn validate_into(&self, violations: &mut Violations) {
//!         if self.name.chars().count() < 1 {
//!             violations.push("name", "string.min_len", "must be at least 1 character");
//!         }
//!     }
//! }
//!
//! let status = keel_rpc::validate::check(&CreateUserRequest { name: String::new() }).unwrap_err();
//! assert_eq!(status.code(), tonic::Code::InvalidArgument);
//! assert_eq!(status.message(), "name: must be at least 1 character");
//! ```
//!
//! [protovalidate]: https://protovalidate.com

mod cel;
mod codec;
pub mod format;

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use self::cel::{CelMessage, CelRule, CelValue, ToCel};
pub use codec::{ValidatingCodec, ValidatingDecoder};

/// The violations kept for one message: enough to fix a request, bounded so
/// that a list of a million bad items cannot make an error that large.
pub const MAX_VIOLATIONS: usize = 64;

/// A message whose `buf.validate` rules can be checked; implemented by
/// `keel-rpc-codegen` for every message of the packages it compiles.
pub trait Validate {
    /// Adds this message's violations to `violations`, with field paths
    /// under the path it is at.
    fn validate_into(&self, violations: &mut Violations);
}

/// Messages that map to Rust types of their own (`google.protobuf.Empty` is
/// `()`) carry no rules.
macro_rules! no_rules {
    ($($ty:ty),* $(,)?) => {
        $(impl Validate for $ty {
            #[inline(always)]
            fn validate_into(&self, _: &mut Violations) {}
        })*
    };
}
no_rules!(
    (),
    String,
    prost_types::Any,
    prost_types::Duration,
    prost_types::Timestamp,
    prost_types::FieldMask,
    prost_types::Struct,
    prost_types::Value,
    prost_types::ListValue,
);

impl<T: Validate + ?Sized> Validate for Box<T> {
    #[inline(always)]
    fn validate_into(&self, violations: &mut Violations) {
        (**self).validate_into(violations);
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The path of the field from the request message: `address.city`,
    /// `tags[2]`, `labels["env"]`; empty for a rule of the message itself.
    pub field: String,
    /// The rule's id: `string.min_len`, or a CEL rule's own `id`.
    pub rule: Cow<'static, str>,
    /// What is wrong, as the rule says it.
    pub message: Cow<'static, str>,
}

/// The violations found in one message, and where in it the check is.
#[derive(Debug, Default)]
pub struct Violations {
    path: String,
    found: Vec<Violation>,
    /// How many were found, kept or not.
    count: usize,
    /// The first rule that could not be evaluated, and why.
    unevaluable: Option<(Cow<'static, str>, String)>,
}

impl Violations {
    /// Records that the field `field` (relative to where the check is; empty
    /// for the value being checked itself) breaks `rule`.
    pub fn push(
        &mut self,
        field: &str,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.count += 1;
        if self.found.len() < MAX_VIOLATIONS {
            let mark = self.enter(field);
            self.found.push(Violation {
                field: self.path.clone(),
                rule: rule.into(),
                message: message.into(),
            });
            self.leave(mark);
        }
    }

    /// Moves the check into `field`; returns the mark to [`leave`](Self::leave) it with.
    pub fn enter(&mut self, field: &str) -> usize {
        let mark = self.path.len();
        if !field.is_empty() {
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(field);
        }
        mark
    }

    /// Moves the check into item `index` of the repeated field `field`.
    pub fn enter_index(&mut self, field: &str, index: usize) -> usize {
        let mark = self.enter(field);
        self.path.push_str(&format!("[{index}]"));
        mark
    }

    /// Moves the check into the entry `key` of the map field `field`
    /// (string keys are quoted).
    pub fn enter_key(&mut self, field: &str, key: &dyn fmt::Debug) -> usize {
        let mark = self.enter(field);
        self.path.push_str(&format!("[{key:?}]"));
        mark
    }

    /// Moves the check back out, to where [`enter`](Self::enter) was called.
    pub fn leave(&mut self, mark: usize) {
        self.path.truncate(mark);
    }

    /// Records that `rule` could not be evaluated (the call fails `INTERNAL`).
    pub fn unevaluable(&mut self, rule: impl Into<Cow<'static, str>>, error: impl fmt::Display) {
        if self.unevaluable.is_none() {
            self.unevaluable = Some((rule.into(), error.to_string()));
        }
    }

    /// The violations kept (at most [`MAX_VIOLATIONS`]).
    pub fn found(&self) -> &[Violation] {
        &self.found
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.unevaluable.is_none()
    }

    /// The status a call with these violations is answered with, if any.
    pub fn into_status(self) -> Result<(), Status> {
        if let Some((rule, error)) = self.unevaluable {
            tracing::error!(%rule, %error, "a validation rule could not be evaluated");
            return Err(Status::internal("a validation rule could not be evaluated"));
        }
        if self.count == 0 {
            return Ok(());
        }
        let mut message = String::new();
        for (i, v) in self.found.iter().enumerate() {
            if i > 0 {
                message.push_str("; ");
            }
            match v.field.is_empty() {
                true => message.push_str(&v.message),
                false => message.push_str(&format!("{}: {}", v.field, v.message)),
            }
        }
        if self.count > self.found.len() {
            message.push_str(&format!(" (and {} more)", self.count - self.found.len()));
        }
        let violations = self
            .found
            .into_iter()
            .map(|v| FieldViolation {
                field: v.field,
                description: v.message.into_owned(),
                reason: v.rule.into_owned(),
                localized_message: None,
            })
            .collect::<Vec<_>>();
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(violations),
        ))
    }
}

/// Checks `message`: `INVALID_ARGUMENT` with a `BadRequest` detail when it
/// breaks a rule, `INTERNAL` when a rule cannot be evaluated.
pub fn check<M: Validate + ?Sized>(message: &M) -> Result<(), Status> {
    let mut violations = Violations::default();
    message.validate_into(&mut violations);
    if violations.is_empty() {
        return Ok(());
    }
    violations.into_status()
}

/// A `string.pattern` rule's regular expression, compiled on first use.
/// Codegen checks the pattern when it builds, so this never fails to compile
/// in generated code.
pub struct Pattern {
    source: &'static str,
    compiled: OnceLock<Result<regex::Regex, regex::Error>>,
}

impl Pattern {
    /// A pattern (RE2 syntax, as protovalidate's).
    pub const fn new(source: &'static str) -> Self {
        Pattern {
            source,
            compiled: OnceLock::new(),
        }
    }

    /// Whether `value` matches; `None` when the pattern does not compile.
    pub fn is_match(&self, value: &str) -> Option<bool> {
        self.compiled
            .get_or_init(|| regex::Regex::new(self.source))
            .as_ref()
            .ok()
            .map(|re| re.is_match(value))
    }

    /// Checks `value` against the pattern as the `rule` of `field`.
    pub fn check(
        &self,
        violations: &mut Violations,
        field: &str,
        rule: &'static str,
        message: &'static str,
        value: &str,
    ) {
        match self.is_match(value) {
            Some(true) => {}
            Some(false) => violations.push(field, rule, message),
            None => {
                violations.unevaluable(rule, format!("pattern {:?} does not compile", self.source))
            }
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

/// Now, as a `Timestamp`'s `(seconds, nanos)` since the Unix epoch, for
/// `timestamp.lt_now` / `gt_now`.
pub fn now() -> (i64, i32) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos() as i32,
    )
}

/// Whether a `Timestamp` is within `span` (a `Duration`'s `(seconds,
/// nanos)`) of now, either side (`timestamp.within`).
pub fn within_of_now(at: (i64, i32), span: (i64, i32)) -> bool {
    let nanos = |(s, n): (i64, i32)| i128::from(s) * 1_000_000_000 + i128::from(n);
    (nanos(at) - nanos(now())).abs() <= nanos(span)
}

/// Whether the items are all different (`repeated.unique`), by hashing:
/// the check stays linear however long the list.
pub fn unique<T: std::hash::Hash + Eq>(items: &[T]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().all(|item| seen.insert(item))
}

/// [`unique`] for floating-point items, compared as protobuf compares them
/// (by value, `-0.0 == 0.0`; a NaN equals no other item).
pub fn unique_floats<T: Copy + Into<f64>>(items: &[T]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().all(|&item| {
        let value: f64 = item.into();
        value.is_nan() || seen.insert(if value == 0.0 { 0 } else { value.to_bits() })
    })
}
