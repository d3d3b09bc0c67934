//! Templating: a topology file is a minijinja template rendered before YAML
//! parsing, so that one file can describe 1000 pods with a loop. Variables
//! come from the command line (`--var n=1000`); values that are canonical
//! integers are passed as integers so `range(n)` works, the others as
//! strings. Undefined variables are errors (`UndefinedBehavior::Strict`), and
//! the trailing newline is kept so that a file without template syntax
//! renders to itself and locations point into the original file.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::error::{Problem, Source};

/// Render `source` with `vars`; errors point into `source`.
pub(crate) fn render(
    file: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, Box<Problem>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(true);
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    let ctx: BTreeMap<&str, Value> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), var_value(v)))
        .collect();
    env.render_named_str(file, source, Value::from(ctx))
        .map_err(|e| Box::new(problem(file, source, vars, &e)))
}

/// `"1000"` -> 1000, anything else stays a string.
fn var_value(v: &str) -> Value {
    match v.parse::<i64>() {
        Ok(n) if n.to_string() == v => Value::from(n),
        _ => Value::from(v),
    }
}

fn problem(
    file: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
    e: &minijinja::Error,
) -> Problem {
    let src = Source::new(file, source.to_string(), false);
    let span = match (e.range(), e.line()) {
        (Some(r), _) if r.end <= source.len() => miette::SourceSpan::new(r.start.into(), r.len()),
        (_, Some(line)) => miette::SourceSpan::new(src.offset(line, 1).into(), 0),
        _ => miette::SourceSpan::new(0.into(), 0),
    };
    let message = match e.detail() {
        Some(detail) => format!("{} in template: {detail}", e.kind()),
        None => format!("{} in template", e.kind()),
    };
    let help = if e.kind() == minijinja::ErrorKind::UndefinedError {
        if vars.is_empty() {
            "no variables are set; pass them with `--var KEY=VALUE`".to_string()
        } else {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!(
                "variables set: {}; pass others with `--var KEY=VALUE`",
                known.join(", ")
            )
        }
    } else {
        "topology files are minijinja templates (https://docs.rs/minijinja)".to_string()
    };
    src.at_span(span, message, e.kind().to_string(), Some(help))
}
