//! Strict JSON reading for every document and message ami-sweeper reads from people or
//! from its own queues (the policy, cleanup jobs, mandates, sweep requests, manual events):
//! a key the shape does not know is an error, never dropped, and every error names the
//! path of the offending field (`accounts.exclude_accounts`). Pure; imports nothing else
//! from the core.
//!
//! serde's `deny_unknown_fields` does not work inside `flatten` or `untagged` shapes;
//! those shapes deserialize by hand and refuse a key with [`refuse_key`], which keeps the
//! key in the path like serde's own refusals do.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess};

/// Input that cannot be read, with the dotted path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct FieldError {
    /// Dotted field path, e.g. `accounts.exclude_accounts`; empty for the whole document.
    pub path: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error below `prefix` (a document carried inside another).
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join(prefix, &self.path);
        self
    }
}

/// `prefix.path`, or either alone when the other is empty.
fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Parses a JSON object strictly: the error names the field path. Text that is not one
/// JSON object (serde would read a struct from an array of its fields) is refused.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    if !text.trim_start().starts_with('{') {
        return Err(FieldError::new("", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(translate)?;
    de.end()
        .map_err(|e| FieldError::new("", strip_position(&e)))?;
    Ok(value)
}

/// Parses a JSON value strictly, as [`from_str`] does text.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, FieldError> {
    if !value.is_object() {
        return Err(FieldError::new("", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        translate_parts(path, e.into_inner())
    })
}

/// Refuses the key `map` has just read, with the key in the error's path (the value is
/// not read). For shapes that read their keys by hand (`untagged`, `flatten`, one-key
/// objects): `known` lists the keys the shape has, for the message.
pub fn refuse_key<'de, A: MapAccess<'de>>(map: &mut A, key: &str, known: &[&str]) -> A::Error {
    refuse_key_with(map, unknown_field_message(key, known))
}

/// As [`refuse_key`], with a message of the caller's.
pub fn refuse_key_with<'de, A: MapAccess<'de>>(map: &mut A, message: String) -> A::Error {
    struct Refuse(String);
    impl<'de> DeserializeSeed<'de> for Refuse {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
            Err(de::Error::custom(self.0))
        }
    }
    match map.next_value_seed(Refuse(message.clone())) {
        Err(e) => e,
        Ok(()) => de::Error::custom(message),
    }
}

/// serde's own wording for an unknown field, which [`translate`] recognises.
fn unknown_field_message(key: &str, known: &[&str]) -> String {
    let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    match list.as_slice() {
        [] => format!("unknown field `{key}`, there are no fields"),
        [one] => format!("unknown field `{key}`, expected {one}"),
        _ => format!("unknown field `{key}`, expected one of {}", list.join(", ")),
    }
}

/// Turns serde's error into a field path and a one-line message.
pub fn translate(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    translate_parts(path, e.into_inner())
}

fn translate_parts(mut path: String, inner: serde_json::Error) -> FieldError {
    if path == "." || path == "?" || inner.is_syntax() || inner.is_eof() {
        path.clear();
    }
    let mut message = strip_position(&inner);
    let below = |path: &str, field: &str| join(path, field);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = below(&path, field);
        message = "missing required field".to_string();
    } else if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = below(&path, field);
        message = "appears more than once".to_string();
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let known = expected
                .trim_start_matches(", there are no fields")
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace("` or `", "`, `");
            if !(path == field || path.ends_with(&format!(".{field}"))) {
                path = below(&path, field);
            }
            message = if known.is_empty() {
                "unknown field".to_string()
            } else {
                format!("unknown field (known fields: {known})")
            };
        }
    }
    FieldError::new(path, message)
}

/// serde_json appends ` at line L column C`; keep the message alone but say where
/// for syntax errors, where the path is of no help.
pub fn strip_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(msg) if e.is_syntax() || e.is_eof() => {
            format!(
                "invalid JSON at line {} column {}: {msg}",
                e.line(),
                e.column()
            )
        }
        Some(msg) => msg.to_string(),
        None => full,
    }
}
