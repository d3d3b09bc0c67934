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
        let found = src.text_at(&loc);
        let (message, label, help) = match explain_shape(e, found, src.key_at(&loc)) {
            Some(explained) => explained,
            None => explain(&DefaultMessageFormatter.format_message(e), found),
        };
        TopologyError::Syntax(Box::new(src.at(&loc, message, label, help)))
    })
}

/// Errors whose serde-saphyr message says what the parser expected rather
/// than what is wrong: an empty or scalar value where a list or a mapping
/// belongs (a template loop that renders nothing leaves `pods:` empty), an
/// empty string, a file beyond the parser's limits. `key` is the mapping
/// key the value belongs to, when there is one.
fn explain_shape(
    e: &serde_saphyr::Error,
    found: &str,
    key: Option<&str>,
) -> Option<(String, &'static str, Option<String>)> {
    use serde_saphyr::Error;
    // Nothing written after the key (or only a comment), or a YAML null.
    let empty =
        matches!(found, "" | ":" | "~" | "null" | "Null" | "NULL") || found.starts_with('#');
    let shown = |found: &str| {
        let line = found.lines().next().unwrap_or("");
        if line.starts_with('{') {
            "a mapping".to_string()
        } else if line.starts_with('[') {
            "a list".to_string()
        } else if line.chars().count() > 40 {
            format!("`{}...`", line.chars().take(40).collect::<String>())
        } else {
            format!("`{line}`")
        }
    };
    match e {
        Error::Unexpected { expected, .. } => {
            let (what, empty_form, example) = match *expected {
                "sequence start" => ("a list", "[]", "one `- item` per line below it"),
                "mapping start" => (
                    "a mapping",
                    "{}",
                    "its keys on the lines below it, indented",
                ),
                _ => return None,
            };
            Some(match (key, empty) {
                (Some(key), true) => (
                    format!("`{key}` is empty, expected {what}"),
                    "empty value",
                    Some(format!(
                        "give `{key}` {example}, write `{key}: {empty_form}` for none, or \
                         remove the key (a template loop that renders nothing leaves it empty)"
                    )),
                ),
                (Some(key), false) => (
                    format!("`{key}` must be {what}, found {}", shown(found)),
                    "wrong type",
                    Some(format!("give `{key}` {example}")),
                ),
                (None, true) => (
                    format!("expected {what}, found nothing"),
                    "empty value",
                    Some(format!("write {what} here, or remove the empty item")),
                ),
                (None, false) => (
                    format!("expected {what}, found {}", shown(found)),
                    "wrong type",
                    None,
                ),
            })
        }
        Error::NullIntoString { .. } => Some(match key {
            Some(key) => (
                format!("`{key}` is empty, expected a string"),
                "empty value",
                Some(format!("write `{key}: VALUE`")),
            ),
            None => (
                "expected a string, found nothing".to_string(),
                "empty value",
                None,
            ),
        }),
        Error::Budget { breach, .. } => Some(budget_problem(breach)),
        _ => None,
    }
}

/// A breach of the YAML parser's limits (serde-saphyr's default budget).
fn budget_problem(
    breach: &serde_saphyr::budget::BudgetBreach,
) -> (String, &'static str, Option<String>) {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::Budget::default();
    let message = match breach {
        B::Nodes { .. } => format!(
            "the topology has more than {} yaml values, lists and mappings",
            limits.max_nodes
        ),
        B::Events { .. } => format!(
            "the topology has more than {} yaml parser events",
            limits.max_events
        ),
        B::Depth { .. } => format!("the yaml nests deeper than {} levels", limits.max_depth),
        B::Aliases { .. } | B::AliasAnchorRatio { .. } => format!(
            "the yaml uses too many aliases (at most {}, and 10 per anchor)",
            limits.max_aliases
        ),
        B::Anchors { .. } => format!("the yaml defines more than {} anchors", limits.max_anchors),
        other => format!("the yaml exceeds the parser's limits ({other:?})").to_lowercase(),
    };
    (
        message,
        "parser limit",
        Some(
            "the yaml parser bounds what a topology may make it do; generate fewer items"
                .to_string(),
        ),
    )
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

/// "did you mean" for an unknown enum value; `rest` is the message after
/// "unknown variant `", which lists the valid ones: serde writes
/// "expected one of `a`, `b`" (or "expected `a` or `b`"), serde-saphyr the
/// same without the backticks.
fn closest_hint(value: &str, rest: &str) -> Option<String> {
    let list = rest
        .split_once("expected one of ")
        .or_else(|| rest.split_once("expected "))
        .map_or("", |(_, list)| list);
    let valid: Vec<&str> = list
        .split(", ")
        .flat_map(|v| v.split(" or "))
        .map(|v| v.trim().trim_matches('`'))
        .filter(|v| !v.is_empty() && *v != value)
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
