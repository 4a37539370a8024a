//! The reference of a configuration's keys, from their declarations.

use super::env::env_var_name;
use super::section::{Env, Key, Nested, join};

/// A Markdown table of every key of `keys` (nested tables and flattened
/// sections included): key, default, environment variable, notes.
pub(super) fn table(keys: &'static [Key]) -> String {
    let mut out =
        String::from("| key | default | environment variable | notes |\n|---|---|---|---|\n");
    rows(keys, "", &mut out);
    out
}

fn rows(keys: &'static [Key], path: &str, out: &mut String) {
    for key in keys {
        let name = join(path, key.name);
        match key.nested {
            Nested::Table { keys, .. } => rows(keys, &name, out),
            Nested::Flatten(keys) => rows(keys, path, out),
            Nested::No => {
                let env = match key.env {
                    Env::Variable => {
                        let parts: Vec<&str> = name.split('.').collect();
                        format!("`{}`", env_var_name(&Default::default(), &parts))
                    }
                    Env::File => "(a file)".to_owned(),
                    Env::Shown(text) => text.to_owned(),
                };
                let mut notes = key.doc.to_owned();
                if !key.bounds.is_empty() {
                    notes.push_str(&format!(" **{}.**", capitalized(key.bounds)));
                }
                if key.required {
                    notes.push_str(" **Required.**");
                }
                if key.secret {
                    notes.push_str(" Redacted wherever it is shown.");
                }
                let default = match key.default {
                    "" | "none" | "empty" => key.default.to_owned(),
                    default => format!("`{default}`"),
                };
                out.push_str(&format!(
                    "| `{name}` | {} | {env} | {} |\n",
                    cell(&default),
                    cell(notes.trim())
                ));
            }
        }
    }
}

/// `text` with its first letter capitalized.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `text` safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
