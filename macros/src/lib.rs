//! Derive macros of [Keel](https://docs.rs/keel-rpc), re-exported by it: use
//! them as `keel_rpc::config::Section`.
//!
//! # `#[derive(Section)]`
//!
//! One annotated struct is a configuration section: its defaults, the
//! bounds of its values, which of them are secrets, how environment
//! variables set them, every problem of a loaded configuration reported at
//! once (key, value, where it came from), and the reference table of its
//! keys. Without it each of those is another hand-kept copy of the struct.
//!
//! ```ignore
//! use std::time::Duration;
//! use keel_rpc::config::{Secret, Section};
//!
//! /// `[tokens]`: what the service issues.
//! #[derive(Clone, Debug, Section)]
//! pub struct Tokens {
//!     /// Lifetime of access tokens.
//!     #[config(default = "15m", min = "10s", max = "24h")]
//!     pub access_ttl: Duration,
//!     /// Tokens issued at once.
//!     #[config(default = 64, min = 1)]
//!     pub batch: u32,
//!     /// Signs them (redacted wherever it is shown).
//!     pub signing_secret: Option<Secret>,
//! }
//! ```
//!
//! Field attributes (`#[config(...)]`):
//!
//! | attribute | meaning |
//! |---|---|
//! | `default = LIT` | the default: a number or `true`/`false`, a duration as text (`"5m"`, checked at build time), text for text fields, or the TOML text of any other type (`"0.0.0.0:50051"`, `"HS256"`) |
//! | `default_fn = path`, `default_doc = "…"` | a computed default, and how the reference shows it |
//! | `min = LIT`, `max = LIT`, `above = LIT` | bounds of numbers and durations (`above`: more than) |
//! | `required` | a missing key is an error |
//! | `section` | the field is a nested table (`[server.tls]`), itself a `Section`; an `Option` of one is absent unless given |
//! | `flatten` | the field's keys are this level's (a service's own sections beside Keel's) |
//! | `env = "…"` | how the reference shows the environment variable |
//! | `not_secret` | a field whose name says secret, password or private key, but whose value is not one |
//!
//! Container attributes: `#[config(validate = path)]`, a
//! `fn(&Self, &mut keel_rpc::config::Problems)` of the rules between keys,
//! run after the bounds; and, for a service's sections,
//! `#[config(validate_config = path)]`, a
//! `fn(&keel_rpc::config::Config<Self>, &mut keel_rpc::config::Problems)` of the
//! rules between them and Keel's (an auth service needs `auth.issuer`).
//!
//! Secrets are typed: a field of type `Secret` (or `DatabaseUrl`) is
//! redacted in `Debug`, `Display`, errors and `print-config`, and taken
//! verbatim from the environment. A field named like a secret of any other
//! type is a build error.

mod section;

use proc_macro::TokenStream;

/// Derives `keel_rpc::config::Section` and `Default`; see the [crate docs](crate).
#[proc_macro_derive(Section, attributes(config))]
pub fn derive_section(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    section::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
