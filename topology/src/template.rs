//! Templating: a topology file is a minijinja template rendered before YAML
//! parsing, so that one file can describe 1000 pods with a loop. Variables
//! come from the command line (`--var n=1000`); values that are canonical
//! integers are passed as integers so `range(n)` works, the others as
//! strings. Undefined variables are errors (`UndefinedBehavior::Strict`), and
//! the trailing newline is kept so that a file without template syntax
//! renders to itself and locations point into the original file.
//!
//! Topology files come from strangers and labctl runs as root, so a render
//! is bounded: minijinja's fuel ([`TEMPLATE_FUEL`]) caps the instructions it
//! runs and the data it builds (a string like `'x' * n` is only built if the
//! fuel left can pay for it), and the rendered text may not grow past
//! [`RENDERED_MAX`] bytes.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

use crate::error::{Problem, Source};

/// The fuel of one render: about one unit per template instruction and per
/// 64 bytes of text the template builds or writes, so it also bounds the
/// memory a template can take (about 64 bytes a unit, 1 GiB in all). The
/// largest shipped template, `scale.yaml --var pods=10000` (100,000 pods),
/// takes about 3.1 million.
pub const TEMPLATE_FUEL: u64 = 16_000_000;

/// The most text a template may render to (and the largest topology file).
pub const RENDERED_MAX: usize = 64 << 20;

/// How a size reads in messages: `64 MiB`.
pub(crate) fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Render `source` with `vars`; errors point into `source`.
pub(crate) fn render(
    file: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, Box<Problem>> {
    let written = Arc::new(AtomicUsize::new(0));
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(true);
    env.set_fuel(Some(TEMPLATE_FUEL));
    // YAML needs no escaping, whatever the file is called (`lab.html`).
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Values are checked before they are written, so that a too long
    // rendering is reported at the `{{ ... }}` that makes it so. Text of the
    // template itself is caught by `Capped`.
    let counter = Arc::clone(&written);
    env.set_formatter(move |out, state, value| {
        let len = match value.as_str() {
            Some(s) => s.len(),
            None => value.to_string().len(),
        };
        if counter.load(Ordering::Relaxed).saturating_add(len) > RENDERED_MAX {
            return Err(Error::new(ErrorKind::InvalidOperation, TOO_LARGE));
        }
        minijinja::escape_formatter(out, state, value)
    });
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.add_filter("version", version);
    let ctx: BTreeMap<&str, Value> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), var_value(v)))
        .collect();
    let fail = |e: &Error, span: Option<miette::SourceSpan>| {
        Box::new(problem(file, source, vars, e, span))
    };
    let template = env
        .template_from_named_str(file, source)
        .map_err(|e| fail(&e, None))?;
    let mut out = Capped {
        buf: Vec::new(),
        written,
        refused: None,
    };
    match template.render_captured_to(Value::from(ctx), &mut out) {
        Ok(_) => Ok(String::from_utf8(out.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
        Err(e) => {
            // Text of the template refused by `Capped`: minijinja does not
            // say where it is, but the text is a slice of `source` itself.
            let span = out.refused.map(|(addr, len)| {
                let start = addr.wrapping_sub(source.as_ptr().addr());
                match source.get(start..start.saturating_add(len)) {
                    Some(text) => {
                        let line = text.split('\n').next().unwrap_or(text);
                        miette::SourceSpan::new(start.into(), line.len())
                    }
                    None => miette::SourceSpan::new(0.into(), 0),
                }
            });
            Err(fail(&e, span))
        }
    }
}

/// The `version` filter: `"1.10.0" | version` is `[1, 10, 0]`, so versions
/// compare by their numbers (`(terway | version) >= ("1.2.0" | version)`),
/// not as text, where "1.10.0" < "1.2.0". A leading `v` is allowed.
fn version(text: &str) -> Result<Value, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "`{text}` is not a version: expected up to 8 numbers separated by dots, \
                 like 1.2.0"
            ),
        )
    };
    let digits = text.strip_prefix('v').unwrap_or(text);
    let parts: Vec<u64> = digits
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u64>().map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    if parts.len() > 8 {
        return Err(bad());
    }
    Ok(Value::from(parts))
}

const TOO_LARGE: &str = "rendered topology is too large";

/// The rendered text: refuses to grow past [`RENDERED_MAX`], and keeps the
/// count of bytes written for the formatter.
struct Capped {
    buf: Vec<u8>,
    written: Arc<AtomicUsize>,
    /// Address and length of the text refused, if any.
    refused: Option<(usize, usize)>,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let len = self.buf.len().saturating_add(bytes.len());
        if len > RENDERED_MAX {
            self.refused = Some((bytes.as_ptr().addr(), bytes.len()));
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, TOO_LARGE));
        }
        if len > self.buf.capacity() {
            // Grow by doubling, but never past the limit.
            let target = len.max(self.buf.capacity() * 2).min(RENDERED_MAX);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        self.written.store(len, Ordering::Relaxed);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `"1000"` -> 1000, anything else stays a string.
fn var_value(v: &str) -> Value {
    match v.parse::<i64>() {
        Ok(n) if n.to_string() == v => Value::from(n),
        _ => Value::from(v),
    }
}

/// The problem of a failed render; `refused` is where the text that made
/// the rendering too large is, when minijinja cannot tell.
fn problem(
    file: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
    e: &Error,
    refused: Option<miette::SourceSpan>,
) -> Problem {
    let src = Source::new(file, source.to_string(), false);
    let span = match (refused, e.range(), e.line()) {
        (Some(span), _, _) => span,
        (_, Some(r), _) if r.end <= source.len() => {
            miette::SourceSpan::new(r.start.into(), r.len())
        }
        (_, _, Some(line)) => miette::SourceSpan::new(src.offset(line, 1).into(), 0),
        _ => miette::SourceSpan::new(0.into(), 0),
    };
    let too_large = refused.is_some() || e.detail() == Some(TOO_LARGE);
    if too_large {
        return src.at_span(
            span,
            format!("rendered topology exceeds {}", mib(RENDERED_MAX)),
            "too much output",
            Some(format!(
                "a topology may render to at most {} of yaml; generate fewer items",
                mib(RENDERED_MAX)
            )),
        );
    }
    if e.kind() == ErrorKind::OutOfFuel {
        return src.at_span(
            span,
            format!(
                "template ran out of fuel after {TEMPLATE_FUEL} steps: its loops run too long \
                 or build too much text"
            ),
            "out of fuel",
            Some(format!(
                "a template may take at most {TEMPLATE_FUEL} steps (one per instruction and \
                 per 64 bytes of text it builds); generate fewer items"
            )),
        );
    }
    let message = match e.detail() {
        Some(detail) => format!("{} in template: {detail}", e.kind()),
        None => format!("{} in template", e.kind()),
    };
    let help = if e.kind() == ErrorKind::UndefinedError {
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
