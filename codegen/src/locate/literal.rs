//! A scanner of one option statement in a `.proto` file's text, enough to
//! find where a field of its text-format value is written:
//!
//! ```text
//! Statement = [ "option" ] Name { "." Name } "=" Value ;
//! Name      = Ident | "(" … ")" ;
//! Value     = Scalar | "-" Scalar | String { String } | Message | List ;
//! Message   = ( "{" | "<" ) { Field [ "," | ";" ] } ( "}" | ">" ) ;
//! Field     = ( Ident | "[" … "]" ) [ ":" ] Value ;
//! List      = "[" [ Value { "," Value } ] "]" ;
//! ```
//!
//! Comments (`//`, `#`, `/* */`) and strings are skipped as protox's lexer
//! does. The text has already compiled (or protox's own error is being
//! placed), so anything else simply ends the scan: the caller falls back.

use super::Step;

/// How deep text-format values may nest before the scan gives up (a
/// guard against a pathological file overflowing the stack).
const MAX_DEPTH: usize = 64;

/// Where the deepest part of a [`Step`] path was found.
pub(super) struct Found {
    /// How many steps were found.
    pub(super) depth: usize,
    /// The byte offset of the last one found.
    pub(super) offset: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Str,
    Punct(char),
}

#[derive(Clone, Copy)]
struct Token<'t> {
    kind: Kind,
    text: &'t str,
    at: usize,
}

/// The tokens of `text` from a byte offset on.
struct Tokens<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Tokens<'t> {
    /// Moves past whitespace and comments.
    fn skip_blank(&mut self) {
        loop {
            let rest = &self.text[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") || trimmed.starts_with('#') {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if let Some(comment) = trimmed.strip_prefix("/*") {
                self.pos += comment.find("*/").map_or(trimmed.len(), |i| i + 4);
            } else {
                return;
            }
        }
    }
}

impl<'t> Iterator for Tokens<'t> {
    type Item = Token<'t>;

    fn next(&mut self) -> Option<Token<'t>> {
        self.skip_blank();
        let rest = &self.text[self.pos..];
        let first = rest.chars().next()?;
        let second = rest[first.len_utf8()..].chars().next();
        let (kind, len) = if first.is_ascii_alphabetic() || first == '_' {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (Kind::Ident, len)
        } else if first.is_ascii_digit()
            || (first == '.' && second.is_some_and(|c| c.is_ascii_digit()))
        {
            // Digits, letters (hex, exponents, an `f` suffix), dots, and
            // a sign right after an exponent's `e`.
            let bytes = rest.as_bytes();
            let mut len = 1;
            while len < bytes.len() {
                let b = bytes[len];
                let signed_exponent = matches!(b, b'+' | b'-')
                    && matches!(bytes[len - 1], b'e' | b'E')
                    && !rest.starts_with("0x")
                    && !rest.starts_with("0X");
                if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || signed_exponent {
                    len += 1;
                } else {
                    break;
                }
            }
            (Kind::Number, len)
        } else if first == '"' || first == '\'' {
            // To the closing quote, past escapes; an unterminated string
            // ends at the line's end.
            let bytes = rest.as_bytes();
            let mut len = 1;
            while len < bytes.len() && bytes[len] != b'\n' {
                match bytes[len] {
                    b'\\' => len += 2,
                    b if b == first as u8 => {
                        len += 1;
                        break;
                    }
                    _ => len += 1,
                }
            }
            (Kind::Str, len.min(bytes.len()))
        } else {
            (Kind::Punct(first), first.len_utf8())
        };
        // An escape can step into a multi-byte character; end the
        // token on a character boundary.
        let mut len = len;
        while !rest.is_char_boundary(len) {
            len += 1;
        }
        let token = Token {
            kind,
            text: &rest[..len],
            at: self.pos,
        };
        self.pos += len;
        Some(token)
    }
}

/// How many tokens `text` has.
pub(super) fn count_tokens(text: &str) -> usize {
    Tokens { text, pos: 0 }.count()
}

/// A value as written: where it starts, and what it holds.
struct Value<'t> {
    at: usize,
    shape: Shape<'t>,
}

enum Shape<'t> {
    Scalar,
    Message(Vec<Field<'t>>),
    List(Vec<Value<'t>>),
}

struct Field<'t> {
    name: &'t str,
    at: usize,
    value: Value<'t>,
}

struct Parser<'t> {
    tokens: std::iter::Peekable<Tokens<'t>>,
    text: &'t str,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str, start: usize) -> Option<Self> {
        text.get(start..)?;
        Some(Parser {
            tokens: Tokens { text, pos: start }.peekable(),
            text,
        })
    }

    fn peek_is(&mut self, c: char) -> bool {
        self.tokens.peek().is_some_and(|t| t.kind == Kind::Punct(c))
    }

    /// Up to and including the `close` punctuation; the text from
    /// `open_at` through it.
    fn through(&mut self, open_at: usize, close: char) -> Option<&'t str> {
        let end = self.tokens.find(|t| t.kind == Kind::Punct(close))?;
        self.text.get(open_at..end.at + end.text.len())
    }

    /// `[ "option" ] Name { "." Name } "="`: the names, each with its
    /// offset.
    fn header(&mut self) -> Option<Vec<(usize, &'t str)>> {
        if self
            .tokens
            .peek()
            .is_some_and(|t| t.kind == Kind::Ident && t.text == "option")
        {
            self.tokens.next();
        }
        let mut names = Vec::new();
        loop {
            let token = self.tokens.next()?;
            let name = match token.kind {
                Kind::Ident => token.text,
                Kind::Punct('(') => self.through(token.at, ')')?,
                _ => return None,
            };
            names.push((token.at, name));
            if !self.peek_is('.') {
                break;
            }
            self.tokens.next();
        }
        let equals = self.tokens.next()?;
        (equals.kind == Kind::Punct('=')).then_some(names)
    }

    fn value(&mut self, depth: usize) -> Option<Value<'t>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let token = self.tokens.next()?;
        let shape = match token.kind {
            Kind::Punct('{') => Shape::Message(self.fields('}', depth + 1)?),
            Kind::Punct('<') => Shape::Message(self.fields('>', depth + 1)?),
            Kind::Punct('[') => {
                let mut items = Vec::new();
                while !self.peek_is(']') {
                    items.push(self.value(depth + 1)?);
                    if self.peek_is(',') {
                        self.tokens.next();
                    }
                }
                self.tokens.next();
                Shape::List(items)
            }
            Kind::Punct('-') => {
                self.tokens.next()?;
                Shape::Scalar
            }
            // Adjacent strings are one value.
            Kind::Str => {
                while self.tokens.peek().is_some_and(|t| t.kind == Kind::Str) {
                    self.tokens.next();
                }
                Shape::Scalar
            }
            Kind::Ident | Kind::Number => Shape::Scalar,
            Kind::Punct(_) => return None,
        };
        Some(Value {
            at: token.at,
            shape,
        })
    }

    fn fields(&mut self, close: char, depth: usize) -> Option<Vec<Field<'t>>> {
        let mut fields = Vec::new();
        loop {
            let token = self.tokens.next()?;
            let name = match token.kind {
                Kind::Punct(c) if c == close => return Some(fields),
                Kind::Ident => token.text,
                // An extension or an `Any`'s type URL.
                Kind::Punct('[') => self.through(token.at, ']')?,
                _ => return None,
            };
            if self.peek_is(':') {
                self.tokens.next();
            }
            let value = self.value(depth)?;
            fields.push(Field {
                name,
                at: token.at,
                value,
            });
            if self.peek_is(',') || self.peek_is(';') {
                self.tokens.next();
            }
        }
    }
}

/// The `n`-th value of the field `name` among `fields` (each element of
/// a list a value of its own), with where to point at it: the value
/// when it is a scalar or a list element, else the field's name.
fn nth_value<'v, 't>(
    fields: &'v [Field<'t>],
    name: &str,
    n: usize,
) -> Option<(usize, &'v Value<'t>)> {
    fields
        .iter()
        .filter(|f| f.name == name)
        .flat_map(|f| match &f.value.shape {
            Shape::List(items) => items.iter().map(|v| (v.at, v)).collect(),
            Shape::Message(_) => vec![(f.at, &f.value)],
            Shape::Scalar => vec![(f.value.at, &f.value)],
        })
        .nth(n)
}

/// Where the deepest part of `within` is written in the option statement
/// starting at byte `start` of `text`, if any of it is.
pub(super) fn find(text: &str, start: usize, within: &[Step<'_>]) -> Option<Found> {
    let mut parser = Parser::new(text, start)?;
    let names = parser.header()?;
    let value = parser.value(0)?;
    // The names past the option's own (`(keel.v1.method).rate_limit`)
    // are the first steps, taken by the statement itself.
    let taken = names.get(1..).unwrap_or_default();
    if taken.len() > within.len()
        || taken
            .iter()
            .zip(within)
            .any(|((_, t), (name, _))| t != name)
    {
        return None;
    }
    let mut found = (!taken.is_empty()).then_some(Found {
        depth: taken.len(),
        offset: value.at,
    });
    let mut current = &value;
    for (i, (name, n)) in within.iter().enumerate().skip(taken.len()) {
        let Shape::Message(fields) = &current.shape else {
            break;
        };
        let Some((offset, next)) = nth_value(fields, name, *n) else {
            break;
        };
        found = Some(Found {
            depth: i + 1,
            offset,
        });
        current = next;
    }
    found
}

/// The offset of the `n`-th name of the statement starting at `start`
/// (`(keel.v1.method)` is the 0th of `(keel.v1.method).auth.public`).
pub(super) fn name_in_header(text: &str, start: usize, n: usize) -> Option<(usize, &str)> {
    let mut parser = Parser::new(text, start)?;
    parser.header()?.get(n).copied()
}

/// The offset and text of the `n`-th token inside the braces of the
/// message literal of the statement starting at `start`.
pub(super) fn token_in_value(text: &str, start: usize, n: usize) -> Option<(usize, &str)> {
    let mut parser = Parser::new(text, start)?;
    parser.header()?;
    if !parser.peek_is('{') {
        return None;
    }
    let token = parser.tokens.nth(n + 1)?;
    Some((token.at, token.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"  option (keel.v1.method) = {
auth { scopes: ["a", "b"] scopes: "c" }  // a comment: key: "x"
labels: { key: "k" value: "}" } labels < key: 'k2' >
/* rate_limit { key: "no" } */ rate_limit { per_second: -1.5e+3 key: "peer" }
  };"#;

    fn at(within: &[Step<'_>]) -> Option<(usize, &'static str)> {
        let found = find(TEXT, 2, within)?;
        Some((found.depth, &TEXT[found.offset..found.offset + 6]))
    }

    #[test]
    fn fields_values_and_list_elements() {
        assert_eq!(at(&[("auth", 0)]), Some((1, "auth {")));
        assert_eq!(at(&[("auth", 0), ("scopes", 1)]), Some((2, "\"b\"] s")));
        assert_eq!(at(&[("auth", 0), ("scopes", 2)]), Some((2, "\"c\" } ")));
        assert_eq!(at(&[("labels", 1), ("key", 0)]), Some((2, "'k2' >")));
        assert_eq!(at(&[("rate_limit", 0), ("key", 0)]), Some((2, "\"peer\"")));
        // Not written: the deepest part that is.
        assert_eq!(at(&[("rate_limit", 0), ("burst", 0)]), Some((1, "rate_l")));
        assert!(at(&[("retry", 0)]).is_none());
    }

    #[test]
    fn a_statement_setting_a_field_of_the_option() {
        let text = "option (keel.v1.method).rate_limit.key = \"ip\";";
        let found = find(text, 0, &[("rate_limit", 0), ("key", 0)]).unwrap();
        assert_eq!((found.depth, &text[found.offset..]), (2, "\"ip\";"));
        assert!(find(text, 0, &[("auth", 0)]).is_none());
    }

    #[test]
    fn tokens_as_protox_joins_them() {
        let joined = "auth { scopes : [ \"a\" , \"b\" ] scopes : \"c\" } ";
        let n = count_tokens(joined);
        let (offset, token) = token_in_value(TEXT, 2, n).unwrap();
        assert_eq!(token, "labels");
        assert_eq!(&TEXT[offset..offset + 7], "labels:");
    }
}
