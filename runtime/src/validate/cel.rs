//! CEL rules (`(buf.validate.field).cel`, `(buf.validate.message).cel`):
//! compiled once, evaluated with the value as `this`, with protovalidate's
//! extension functions (`isEmail()`, `isHostname()`, `unique()`, …).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use ::cel::extractors::This;
use ::cel::objects::{Key, Map};
use ::cel::{Context, Program, Value};

use super::{Violations, format};

/// One CEL rule as written in the proto: a `static` in generated code, its
/// program compiled on first use. Codegen compiles the expression when it
/// builds, so a syntax error fails the build, not a call.
///
/// The expression sees the value as `this` (a message as a map of its
/// fields by proto name, holding the set ones) and gives either a bool
/// (`false` breaks the rule, reported with the rule's `message`) or a
/// string (non-empty: broken, and that is the message).
///
/// ```
/// use keel_rpc::validate::{CelRule, Violations};
///
/// static NOT_BLANK: CelRule = CelRule::new("name.not_blank", "must not be blank", "this.trim() != ''");
/// static SHORT: CelRule = CelRule::new("name.short", "", "size(this) <= 3 ? '' : 'at most 3 characters'");
///
/// let mut violations = Violations::default();
/// SHORT.check(&mut violations, "name", &"Grace".to_owned());
/// assert_eq!(violations.found()[0].message, "at most 3 characters");
/// ```
pub struct CelRule {
    id: &'static str,
    message: &'static str,
    expression: &'static str,
    program: OnceLock<Result<Program, String>>,
}

impl CelRule {
    /// A rule with its `id`, `message` (may be empty) and `expression`.
    pub const fn new(id: &'static str, message: &'static str, expression: &'static str) -> Self {
        CelRule {
            id,
            message,
            expression,
            program: OnceLock::new(),
        }
    }

    /// Evaluates the rule on `value`, the `field` where the check is (empty
    /// for the value itself), recording a violation or an evaluation error.
    pub fn check<V: ToCel + ?Sized>(&self, violations: &mut Violations, field: &str, value: &V) {
        let program = self
            .program
            .get_or_init(|| Program::compile(self.expression).map_err(|e| e.to_string()));
        let program = match program {
            Ok(program) => program,
            Err(error) => return violations.unevaluable(self.id, error),
        };
        let result = ROOT.with(|root| {
            let mut context = root.new_inner_scope();
            context.add_variable_from_value("this", value.to_cel());
            program.execute(&context)
        });
        match result {
            Ok(Value::Bool(true)) => {}
            Ok(Value::String(message)) if message.is_empty() => {}
            Ok(Value::Bool(false)) if self.message.is_empty() => violations.push(
                field,
                self.id,
                format!("does not satisfy rule `{}`", self.id),
            ),
            Ok(Value::Bool(false)) => violations.push(field, self.id, self.message),
            Ok(Value::String(message)) => violations.push(field, self.id, message.to_string()),
            Ok(other) => violations.unevaluable(
                self.id,
                format!("the expression gave {other:?}, not a bool or a string"),
            ),
            Err(error) => violations.unevaluable(self.id, error),
        }
    }
}

impl fmt::Debug for CelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelRule")
            .field("id", &self.id)
            .field("expression", &self.expression)
            .finish()
    }
}

thread_local! {
    /// CEL's standard functions and protovalidate's, made once per thread
    /// (a context is not `Sync`); each check adds `this` in a scope of its own.
    static ROOT: Context<'static> = root();
}

fn root() -> Context<'static> {
    let mut context = Context::default();
    context.add_function("isEmail", |This(this): This<Arc<String>>| {
        format::is_email(&this)
    });
    context.add_function("isHostname", |This(this): This<Arc<String>>| {
        format::is_hostname(&this)
    });
    context.add_function("isIp", |This(this): This<Arc<String>>| format::is_ip(&this));
    context.add_function("isUri", |This(this): This<Arc<String>>| {
        format::is_uri(&this)
    });
    context.add_function("isUriRef", |This(this): This<Arc<String>>| {
        format::is_uri_ref(&this)
    });
    context.add_function("isNan", |This(this): This<f64>| this.is_nan());
    context.add_function("isInf", |This(this): This<f64>| this.is_infinite());
    context.add_function("trim", |This(this): This<Arc<String>>| {
        this.trim().to_owned()
    });
    context.add_function("unique", |This(this): This<Arc<Vec<Value>>>| unique(&this));
    context
}

/// Whether a list's items are all different; scalars by hashing, anything
/// else (lists, maps) by comparison.
fn unique(items: &[Value]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut others: Vec<&Value> = Vec::new();
    items.iter().all(|item| match scalar_key(item) {
        Some(key) => seen.insert(key),
        None if others.contains(&item) => false,
        None => {
            others.push(item);
            true
        }
    })
}

#[derive(Hash, PartialEq, Eq)]
enum ScalarKey<'a> {
    Int(i64),
    UInt(u64),
    Float(u64),
    Bool(bool),
    Str(&'a str),
    Bytes(&'a [u8]),
}

fn scalar_key(value: &Value) -> Option<ScalarKey<'_>> {
    Some(match value {
        Value::Int(i) => ScalarKey::Int(*i),
        Value::UInt(u) => ScalarKey::UInt(*u),
        Value::Float(f) if *f == 0.0 => ScalarKey::Float(0),
        Value::Float(f) => ScalarKey::Float(f.to_bits()),
        Value::Bool(b) => ScalarKey::Bool(*b),
        Value::String(s) => ScalarKey::Str(s),
        Value::Bytes(b) => ScalarKey::Bytes(b),
        _ => return None,
    })
}

/// A value as a CEL rule sees it; codegen implements it for the messages a
/// CEL rule reads (a map of the fields that are set, by proto name).
pub trait ToCel {
    /// The CEL value.
    fn to_cel(&self) -> Value;
}

macro_rules! to_cel {
    ($($ty:ty => $variant:ident as $as:ty),* $(,)?) => {
        $(impl ToCel for $ty {
            fn to_cel(&self) -> Value {
                Value::$variant(<$as>::from(*self))
            }
        })*
    };
}
to_cel!(
    i32 => Int as i64,
    i64 => Int as i64,
    u32 => UInt as u64,
    u64 => UInt as u64,
    f32 => Float as f64,
    f64 => Float as f64,
    bool => Bool as bool,
);

impl ToCel for String {
    fn to_cel(&self) -> Value {
        Value::String(Arc::new(self.clone()))
    }
}

impl ToCel for str {
    fn to_cel(&self) -> Value {
        Value::String(Arc::new(self.to_owned()))
    }
}

impl ToCel for Vec<u8> {
    fn to_cel(&self) -> Value {
        Value::Bytes(Arc::new(self.clone()))
    }
}

impl<T: ToCel> ToCel for Vec<T> {
    fn to_cel(&self) -> Value {
        Value::List(Arc::new(self.iter().map(ToCel::to_cel).collect()))
    }
}

impl<T: ToCel + ?Sized> ToCel for Box<T> {
    fn to_cel(&self) -> Value {
        (**self).to_cel()
    }
}

impl<K, V, S> ToCel for HashMap<K, V, S>
where
    K: Clone + Into<Key>,
    V: ToCel,
{
    fn to_cel(&self) -> Value {
        let map: HashMap<Key, Value> = self
            .iter()
            .map(|(k, v)| (k.clone().into(), v.to_cel()))
            .collect();
        Value::Map(Map { map: Arc::new(map) })
    }
}

impl ToCel for prost_types::Timestamp {
    fn to_cel(&self) -> Value {
        CelMessage::default()
            .field("seconds", &self.seconds)
            .field("nanos", &self.nanos)
            .into_value()
    }
}

impl ToCel for prost_types::Duration {
    fn to_cel(&self) -> Value {
        CelMessage::default()
            .field("seconds", &self.seconds)
            .field("nanos", &self.nanos)
            .into_value()
    }
}

/// A message being turned into a CEL map, field by field (generated
/// `ToCel` impls use it).
#[derive(Debug, Default)]
pub struct CelMessage {
    fields: HashMap<Key, Value>,
}

impl CelMessage {
    /// Adds a field by its proto name.
    pub fn field<V: ToCel + ?Sized>(mut self, name: &'static str, value: &V) -> Self {
        self.fields.insert(Key::from(name), value.to_cel());
        self
    }

    /// The map.
    pub fn into_value(self) -> Value {
        Value::Map(Map {
            map: Arc::new(self.fields),
        })
    }
}

/// The value type of [`ToCel`] (the `cel` crate's).
pub type CelValue = Value;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_give_violations_messages_and_errors() {
        static POSITIVE: CelRule = CelRule::new("n.positive", "must be positive", "this > 0");
        static NAMED: CelRule = CelRule::new("m.named", "", "this.name.isEmail()");
        static BROKEN: CelRule = CelRule::new("m.broken", "", "this.missing == 1");
        let mut violations = Violations::default();
        POSITIVE.check(&mut violations, "n", &5_i32);
        assert!(violations.is_empty());
        POSITIVE.check(&mut violations, "n", &-5_i32);
        let message = CelMessage::default().field("name", "not-an-email");
        struct M(Value);
        impl ToCel for M {
            fn to_cel(&self) -> Value {
                self.0.clone()
            }
        }
        let m = M(message.into_value());
        NAMED.check(&mut violations, "", &m);
        assert_eq!(violations.found().len(), 2);
        assert_eq!(violations.found()[0].message, "must be positive");
        assert_eq!(
            violations.found()[1].message,
            "does not satisfy rule `m.named`"
        );
        BROKEN.check(&mut violations, "", &m);
        assert!(violations.into_status().unwrap_err().code() == tonic::Code::Internal);
    }

    #[test]
    fn unique_lists() {
        assert!(unique(&[Value::Int(1), Value::Int(2)]));
        assert!(!unique(&[
            Value::String(Arc::new("a".into())),
            Value::String(Arc::new("a".into()))
        ]));
    }
}
