//! Errors of the topology language. Every problem points into the (rendered)
//! source as a compiler would: its `Display` is one line,
//! `file:line:column: message`, for logs and tests, and its `miette`
//! diagnostic carries the source, a labelled span and a hint for terminals.
//! Semantic errors are all collected before reporting; the first one is the
//! main diagnostic and the others are `related`.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};
use serde_saphyr::Location;

/// Why a topology could not be loaded.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{file}: cannot read topology file: {source}")]
    #[diagnostic(code(topology::read))]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// minijinja could not render the file.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Template(Box<Problem>),
    /// The rendered text is not valid YAML or does not fit the language
    /// (unknown key, wrong type ...).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(Box<Problem>),
    /// The topology parsed but is not valid; every problem found.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Problems),
}

impl TopologyError {
    /// Every located problem, in source order (none for I/O errors).
    pub fn problems(&self) -> Vec<&Problem> {
        match self {
            TopologyError::Read { .. } => Vec::new(),
            TopologyError::Template(p) | TopologyError::Syntax(p) => vec![p],
            TopologyError::Invalid(ps) => ps.iter().collect(),
        }
    }
}

/// One located problem in a topology file.
#[derive(Debug, Clone, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Problem {
    pub file: String,
    /// 1-based line in the rendered source.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Lowercase, without location.
    pub message: String,
    /// Short text under the offending span.
    pub label: String,
    #[help]
    pub help: Option<String>,
    #[source_code]
    pub source_code: NamedSource<Arc<String>>,
    #[label("{label}")]
    pub span: SourceSpan,
    /// Secondary spans, e.g. where a duplicate was first defined.
    #[label(collection)]
    pub others: Vec<LabeledSpan>,
}

/// Columns past which a problem shows no source snippet, only its
/// `file:line:column`: miette pads the underline out to the column and
/// panics past 65535 (a fuzzed template rendered a 1,000,000-character
/// line), and such a line is unreadable in a terminal anyway.
pub const SNIPPET_COLUMNS: usize = 1000;

/// The 1-based column of byte `offset` in `text`.
fn column_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    offset - start + 1
}

impl Problem {
    /// Add a secondary labelled span (left out where the snippet would be
    /// too wide to show, see [`SNIPPET_COLUMNS`]).
    pub(crate) fn also(mut self, span: SourceSpan, label: &str) -> Self {
        let text = self.source_code.inner().as_str();
        if text.is_empty() || column_of(text, span.offset() + span.len()) > SNIPPET_COLUMNS {
            return self;
        }
        self.others
            .push(LabeledSpan::new_with_span(Some(label.to_string()), span));
        self
    }
}

/// Several problems: displayed as the first one (plus a count), the others
/// attached as related diagnostics. Never empty.
#[derive(Debug)]
pub struct Problems {
    first: Box<Problem>,
    rest: Vec<Problem>,
}

impl Problems {
    /// `None` when `problems` is empty.
    pub(crate) fn new(mut problems: Vec<Problem>) -> Option<Self> {
        if problems.is_empty() {
            return None;
        }
        let first = Box::new(problems.remove(0));
        Some(Problems {
            first,
            rest: problems,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        std::iter::once(&*self.first).chain(&self.rest)
    }

    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        match self.rest.len() {
            0 => Ok(()),
            1 => write!(f, " (and 1 more error)"),
            n => write!(f, " (and {n} more errors)"),
        }
    }
}

impl std::error::Error for Problems {}

impl Diagnostic for Problems {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.first.help()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.first.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.first.labels()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(Box::new(self.rest.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// A (rendered) topology text and what is needed to point into it.
pub(crate) struct Source {
    pub file: String,
    pub text: Arc<String>,
    /// The text came out of a template that changed it: locations refer to
    /// the rendered text, not to the file.
    pub templated: bool,
    named: NamedSource<Arc<String>>,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(file: &str, text: String, templated: bool) -> Self {
        let text = Arc::new(text);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file: file.to_string(),
            named: NamedSource::new(file, Arc::clone(&text)).with_language("yaml"),
            text,
            templated,
            line_starts,
        }
    }

    /// Byte offset of a 1-based line and character column, clamped to the text.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        let within = line_text
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
        start + within
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }

    /// The byte span of a serde-saphyr location (`len` is in characters).
    pub fn span(&self, loc: &Location) -> SourceSpan {
        let start = self.offset(loc.line() as usize, loc.column() as usize);
        let chars = loc.span().len() as usize;
        let len = self.text[start..]
            .char_indices()
            .nth(chars)
            .map_or(self.text.len() - start, |(i, _)| i);
        SourceSpan::new(start.into(), len)
    }

    /// The text under a location: its span, or else the word starting there.
    pub fn text_at(&self, loc: &Location) -> &str {
        let span = self.span(loc);
        let start = span.offset();
        if !span.is_empty() {
            return &self.text[start..start + span.len()];
        }
        let rest = &self.text[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || ",[]{}#".contains(c))
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// The mapping key that the value at a location belongs to: the word
    /// before the `:` that ends its line up to there (the location is that
    /// `:` itself when the value is empty).
    pub fn key_at(&self, loc: &Location) -> Option<&str> {
        let at = self.span(loc).offset();
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let before = &self.text[line_start..at];
        let before = if self.text[at..].starts_with(':') {
            before
        } else {
            before.trim_end().strip_suffix(':')?
        };
        let key = before
            .trim_end()
            .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()?
            .trim_matches(|c| c == '"' || c == '\'');
        (!key.is_empty()).then_some(key)
    }

    /// A problem at a YAML location.
    pub fn at(
        &self,
        loc: &Location,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> Problem {
        let span = if *loc == Location::UNKNOWN {
            SourceSpan::new(0.into(), 0)
        } else {
            self.span(loc)
        };
        self.at_span(span, message, label, help)
    }

    /// A problem at a byte span.
    pub fn at_span(
        &self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> Problem {
        let (line, column) = self.line_column(span.offset());
        let end = column_of(&self.text, span.offset() + span.len());
        let (source_code, span) = if column.max(end) > SNIPPET_COLUMNS {
            (
                NamedSource::new(&self.file, Arc::new(String::new())),
                SourceSpan::new(0.into(), 0),
            )
        } else {
            (self.named.clone(), span)
        };
        let help = if self.templated {
            let note = format!(
                "locations refer to the rendered template; see `labctl render {}`",
                self.file
            );
            Some(match help {
                Some(h) => format!("{h}\n{note}"),
                None => note,
            })
        } else {
            help
        };
        Problem {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
            label: label.into(),
            help,
            source_code,
            span,
            others: Vec::new(),
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest candidate to `name`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`? known: a, b, c" for an unknown reference.
pub(crate) fn unknown_hint(what: &str, name: &str, known: &[&str]) -> String {
    let list = if known.is_empty() {
        format!("there are no {what}s")
    } else if known.len() <= 12 {
        format!("known {what}s: {}", known.join(", "))
    } else {
        format!(
            "known {what}s: {}, ... ({} in all)",
            known[..10].join(", "),
            known.len()
        )
    };
    match closest(name, known.iter().copied()) {
        Some(c) => format!("did you mean `{c}`? {list}"),
        None => list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance("node-18", "node-180"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            closest("node-18", ["node-180", "node-206"]),
            Some("node-180")
        );
        assert_eq!(closest("zzz", ["node-180"]), None);
    }

    #[test]
    fn offsets_and_columns() {
        let s = Source::new("t.yaml", "a: 1\nbé: xy\n".to_string(), false);
        assert_eq!(s.offset(2, 5), 10);
        assert_eq!(s.line_column(10), (2, 5));
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.offset(9, 1), s.text.len());
    }
}
