//! labctl's topology language: a YAML file, rendered first as a minijinja
//! template, describing a cloud VPC, its nodes, pods and clients. Loading
//! goes template -> parse (raw serde types, `raw`) -> resolve (checks and
//! defaults, `resolve`) -> the validated model (`model`). Every error points
//! at `file:line:column` of the rendered text (`error`).

mod error;
pub mod model;
mod raw;
mod resolve;
mod template;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

pub use error::{Problem, Problems, TopologyError};
pub use model::*;
pub use resolve::{DEFAULT_BRIDGE, ENTITY_NAME_MAX, LAB_NAME_MAX, check_lab_name};
pub use template::{RENDERED_MAX, TEMPLATE_FUEL};

use error::{Source, closest};

/// Render the file with minijinja (vars from the CLI, e.g. `--var n=1000`),
/// then parse and resolve it.
pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<Lab, TopologyError> {
    let (file, source) = read(path)?;
    load_str(&file, &source, vars)
}

/// Like [`load`], for a topology held in memory; `file_name` is used in
/// messages.
pub fn load_str(
    file_name: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Lab, TopologyError> {
    let rendered = template::render(file_name, source, vars).map_err(TopologyError::Template)?;
    let templated = rendered != source;
    let src = Source::new(file_name, rendered, templated);
    let raw = parse(&src)?;
    resolve::resolve(&src, raw).map_err(TopologyError::Invalid)
}

/// The topology after templating (what `labctl render` prints).
pub fn render(path: &Path, vars: &BTreeMap<String, String>) -> Result<String, TopologyError> {
    let (file, source) = read(path)?;
    template::render(&file, &source, vars).map_err(TopologyError::Template)
}

/// JSON schema of the topology language (schemars), as published in
/// `schema/topology.schema.json`.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::RawTopology);
    schema.to_value()
}

/// Read a topology file, refusing one larger than the rendered text may be
/// (and whatever never ends, like a FIFO fed forever).
fn read(path: &Path) -> Result<(String, String), TopologyError> {
    let file = path.display().to_string();
    let mut source = String::new();
    let limit = template::RENDERED_MAX as u64;
    let result = std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut source))
        .and_then(|len| {
            if len as u64 > limit {
                Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("larger than {}", template::mib(template::RENDERED_MAX)),
                ))
            } else {
                Ok(())
            }
        });
    match result {
        Ok(()) => Ok((file, source)),
        Err(source) => Err(TopologyError::Read { file, source }),
    }
}

/// YAML -> raw types; a syntax or shape error becomes a located problem.
fn parse(src: &Source) -> Result<raw::RawTopology, TopologyError> {
    serde_saphyr::from_str(&src.text).map_err(|e| {
        let e = e.without_snippet();
        let loc = e.location().unwrap_or(serde_saphyr::Location::UNKNOWN);
        let message = DefaultMessageFormatter.format_message(e);
        let found = src.text_at(&loc);
        let (message, label, help) = explain(&message, found);
        TopologyError::Syntax(Box::new(src.at(&loc, message, label, help)))
    })
}

/// Turn a serde-saphyr message into ours: lowercase, with the offending
/// text and a hint.
fn explain(message: &str, found: &str) -> (String, &'static str, Option<String>) {
    let message = message
        .trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable")
        .to_string();
    let mut message = lowercase_first(&message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // "unknown field `x`, expected one of a, b" (or "expected a").
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected
            .trim_start_matches(", expected ")
            .trim_start_matches("one of ")
            .split(", ")
            .map(|s| s.trim_matches('`'))
            .filter(|s| !s.is_empty())
            .collect();
        let help = match closest(field, valid.iter().copied()) {
            Some(c) => format!("did you mean `{c}`? valid keys: {}", valid.join(", ")),
            None => format!("valid keys: {}", valid.join(", ")),
        };
        return (
            format!(
                "unknown key `{field}`, expected one of: {}",
                valid.join(", ")
            ),
            "unknown key",
            Some(help),
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (message.clone(), "unknown value", closest_hint(field, rest));
    }
    if message.starts_with("invalid u16") || message.starts_with("invalid u64") {
        message = format!("expected a number from 0 to 65535, found `{found}`");
        return (message, "not a number", None);
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        let field = field.to_string();
        return (
            message,
            "in this mapping",
            Some(format!("add {field} here")),
        );
    }
    if message.starts_with("duplicate mapping key") {
        return (
            message,
            "duplicate key",
            Some("each key may appear once".to_string()),
        );
    }
    if !found.is_empty() && !message.starts_with("invalid ") && !message.contains(found) {
        message = format!("{message}, found `{found}`");
    }
    (message, "here", None)
}

/// "did you mean" for an unknown enum value; `rest` lists the valid ones.
fn closest_hint(value: &str, rest: &str) -> Option<String> {
    let valid: Vec<&str> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|v| *v != value)
        .collect();
    closest(value, valid.iter().copied())
        .map(|c| format!("did you mean `{c}`?"))
        .or_else(|| (!valid.is_empty()).then(|| format!("valid values: {}", valid.join(", "))))
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
