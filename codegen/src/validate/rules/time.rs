//! The rules of the well-known time types, `google.protobuf.Timestamp`
//! and `google.protobuf.Duration`: `const`, the range, `in` and `not_in`
//! (durations), `lt_now`, `gt_now` and `within` (timestamps).

use proc_macro2::{Literal, TokenStream};
use prost_reflect::DynamicMessage;
use quote::quote;

use super::membership::membership;
use super::range::{Bound, range};
use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    /// The rules of a `google.protobuf.Timestamp` or `Duration` field
    /// (`time` says which), compared as `(seconds, nanos)`.
    pub(super) fn time(
        &mut self,
        label: &str,
        time: Time,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let runtime = self.runtime.clone();
        let type_name = time.rules_name();
        let value = quote! { (value.seconds, value.nanos) };
        let mut checks = TokenStream::new();
        let mut lower: Option<(bool, (i64, i32))> = None;
        let mut upper: Option<(bool, (i64, i32))> = None;
        for (member, rule_value) in rules.fields() {
            let rule = member.name();
            let id = format!("{type_name}.{rule}");
            let at = rule_value.as_message().map(seconds_nanos);
            match (rule, at) {
                ("const", Some(at)) => {
                    let (literal, shown) = (tuple(at), time.show(at));
                    let message = format!("must equal {shown}");
                    checks.extend(quote! {
                        if #value != #literal { violations.push(#label, #id, #message); }
                    });
                }
                ("lt", Some(at)) => upper = Some((false, at)),
                ("lte", Some(at)) => upper = Some((true, at)),
                ("gt", Some(at)) => lower = Some((false, at)),
                ("gte", Some(at)) => lower = Some((true, at)),
                ("in" | "not_in", _) if time == Time::Duration => {
                    let items: Vec<(i64, i32)> = rule_value
                        .as_list()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v.as_message().map(seconds_nanos))
                        .collect();
                    let literals: Vec<TokenStream> = items.iter().map(|at| tuple(*at)).collect();
                    let shown: Vec<String> = items.iter().map(|at| time.show(*at)).collect();
                    checks.extend(membership(
                        label,
                        type_name,
                        rule,
                        quote! { &#value },
                        &literals,
                        &shown,
                    ));
                }
                ("lt_now" | "gt_now", _) if time == Time::Timestamp => {
                    if rule_value.as_bool() != Some(true) {
                        continue;
                    }
                    let (test, message) = match rule {
                        "lt_now" => (quote! { < }, "must be less than now"),
                        _ => (quote! { > }, "must be greater than now"),
                    };
                    checks.extend(quote! {
                        if !(#value #test #runtime::validate::now()) {
                            violations.push(#label, #id, #message);
                        }
                    });
                }
                ("within", Some(span)) if time == Time::Timestamp => {
                    let literal = tuple(span);
                    let message = format!("must be within {} of now", Time::Duration.show(span));
                    checks.extend(quote! {
                        if !#runtime::validate::within_of_now(#value, #literal) {
                            violations.push(#label, #id, #message);
                        }
                    });
                }
                ("example", _) => {}
                (other, _) => self.unsupported(type_name, other, path),
            }
        }
        let bound = |b: &Option<(bool, (i64, i32))>| {
            b.map(|(inclusive, at)| Bound {
                inclusive,
                literal: tuple(at),
                shown: time.show(at),
            })
        };
        let exclusive = matches!((&lower, &upper), (Some((_, l)), Some((_, u))) if u < l);
        checks.extend(range(
            label,
            type_name,
            &value,
            bound(&lower),
            bound(&upper),
            exclusive,
        ));
        checks
    }
}

/// Which of the two well-known time types a field is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Time {
    Timestamp,
    Duration,
}

impl Time {
    fn rules_name(self) -> &'static str {
        match self {
            Time::Timestamp => "timestamp",
            Time::Duration => "duration",
        }
    }

    /// A rule's value as its message shows it: RFC 3339, or `1.5s`.
    fn show(self, (seconds, nanos): (i64, i32)) -> String {
        match self {
            Time::Timestamp => rfc3339(seconds, nanos),
            Time::Duration if nanos == 0 => format!("{seconds}s"),
            Time::Duration => {
                let total = seconds as f64 + f64::from(nanos) / 1e9;
                format!("{total}s")
            }
        }
    }
}

/// A `Timestamp` or `Duration` rules value as `(seconds, nanos)`.
fn seconds_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = message
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    let nanos = message
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or_default();
    (seconds, nanos)
}

fn tuple((seconds, nanos): (i64, i32)) -> TokenStream {
    let (s, n) = (Literal::i64_suffixed(seconds), Literal::i32_suffixed(nanos));
    quote! { (#s, #n) }
}

/// `seconds` since the Unix epoch in UTC as RFC 3339 (days to a civil date
/// by Howard Hinnant's algorithm).
fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match nanos {
        0 => String::new(),
        n => format!(".{n:09}").trim_end_matches('0').to_owned(),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
