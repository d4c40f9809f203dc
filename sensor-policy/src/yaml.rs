//! A YAML document as a tree of nodes that remember where they start (line and column), built
//! from `granit-parser` events. Typing follows the YAML 1.2 core schema: a quoted scalar is a
//! string; a plain one is null, a boolean, an integer, a float or a string by its spelling.
//!
//! Deliberately small: one document, no aliases (no billion-laughs expansion), no tags.

use granit_parser::{Event, Options, Parser, ScalarStyle, Span};

/// 1-based line and column (the column counts characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug)]
pub(crate) enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// Stands for something already reported (an alias): checks skip it silently.
    Invalid,
}

#[derive(Debug)]
pub(crate) struct Scalar {
    pub text: String,
    /// Written without quotes (its type then depends on its spelling).
    pub plain: bool,
}

/// What a scalar resolves to under the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScalarType {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Scalar {
    pub fn resolve(&self) -> ScalarType {
        if !self.plain {
            return ScalarType::Str;
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return ScalarType::Null,
            "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarType::Bool,
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
            | "-.INF" | ".nan" | ".NaN" | ".NAN" => return ScalarType::Float,
            _ => {}
        }
        let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
        if digits(unsigned, 10)
            || t.strip_prefix("0o").is_some_and(|s| digits(s, 8))
            || t.strip_prefix("0x").is_some_and(|s| digits(s, 16))
        {
            return ScalarType::Int;
        }
        if is_float(unsigned) {
            return ScalarType::Float;
        }
        ScalarType::Str
    }
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

impl Node {
    /// A short description of what the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Invalid => "an invalid value",
            NodeKind::Scalar(s) => match s.resolve() {
                ScalarType::Null => "nothing (null)",
                ScalarType::Bool => "a boolean",
                ScalarType::Int => "an integer",
                ScalarType::Float => "a number",
                ScalarType::Str => "a string",
            },
        }
    }
}

/// A YAML-level problem (syntax, or a feature policy files do not use).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Nesting far beyond what a policy needs is refused by the parser (and keeps recursion in
/// `Drop` shallow).
const NESTING_LIMIT: usize = 64;

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Parses one YAML document. `Ok(None)` for a stream without a document (empty, or only
/// comments). Syntax errors end the parse (the parser cannot recover inside a document); the
/// other problems are collected and the tree is still returned when there is one.
pub(crate) fn load(text: &str) -> (Option<Node>, Vec<YamlError>) {
    let mut options = Options::default();
    options.set_emit_comments(false);
    options.flow_nesting_limit = NESTING_LIMIT;
    options.block_nesting_limit = NESTING_LIMIT;
    let parser = Parser::new_from_str_with_options(text, options);

    let mut errors = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    for item in parser {
        let (event, span) = match item {
            Ok(pair) => pair,
            Err(e) => {
                let marker = e.marker();
                errors.push(YamlError {
                    pos: Pos {
                        line: marker.line().max(1),
                        column: marker.col() + 1,
                    },
                    message: format!("YAML syntax error: {}", e.info()),
                });
                return (None, errors);
            }
        };
        let pos = Pos::of(&span);
        let node = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    errors.push(YamlError {
                        pos,
                        message: "a policy file holds one YAML document; found a second one".into(),
                    });
                    break;
                }
                continue;
            }
            Event::Scalar(text, style, _anchor, tag) => {
                if tag.is_some() {
                    errors.push(tag_error(pos));
                }
                Node {
                    pos,
                    kind: NodeKind::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    }),
                }
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                errors.push(YamlError {
                    pos,
                    message: "YAML aliases are not supported in policy files".into(),
                });
                Node {
                    pos,
                    kind: NodeKind::Invalid,
                }
            }
            Event::SequenceStart(_, _, tag) => {
                if tag.is_some() {
                    errors.push(tag_error(pos));
                }
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(_, _, tag) => {
                if tag.is_some() {
                    errors.push(tag_error(pos));
                }
                stack.push(Frame::Map(pos, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(pos, items)) => Node {
                    pos,
                    kind: NodeKind::Seq(items),
                },
                Some(Frame::Map(pos, entries, _)) => Node {
                    pos,
                    kind: NodeKind::Map(entries),
                },
                // The parser balances its events; nothing to close is not reachable.
                None => continue,
            },
            _ => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    (root, errors)
}

fn tag_error(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: "YAML tags are not supported in policy files".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, plain: bool) -> ScalarType {
        Scalar {
            text: text.into(),
            plain,
        }
        .resolve()
    }

    #[test]
    fn core_schema_typing() {
        assert_eq!(scalar("80", true), ScalarType::Int);
        assert_eq!(scalar("-80", true), ScalarType::Int);
        assert_eq!(scalar("0o755", true), ScalarType::Int);
        assert_eq!(scalar("0x1F", true), ScalarType::Int);
        assert_eq!(scalar("80", false), ScalarType::Str);
        assert_eq!(scalar("true", true), ScalarType::Bool);
        assert_eq!(scalar("yes", true), ScalarType::Str);
        assert_eq!(scalar("~", true), ScalarType::Null);
        assert_eq!(scalar("1.5", true), ScalarType::Float);
        assert_eq!(scalar("1e3", true), ScalarType::Float);
        assert_eq!(scalar(".5", true), ScalarType::Float);
        assert_eq!(scalar(".", true), ScalarType::Str);
        assert_eq!(scalar("1.2.3.4", true), ScalarType::Str);
        assert_eq!(scalar("10.0.0.0/8", true), ScalarType::Str);
        assert_eq!(scalar("fd00:ec2::254/128", true), ScalarType::Str);
    }

    #[test]
    fn nodes_know_their_position() {
        let (root, errors) = load("a:\n  - x\n  - {b: 1}\n");
        assert!(errors.is_empty(), "{errors:?}");
        let root = root.unwrap();
        let NodeKind::Map(entries) = &root.kind else {
            panic!("not a map")
        };
        let (key, value) = &entries[0];
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let NodeKind::Seq(items) = &value.kind else {
            panic!("not a list")
        };
        assert_eq!(items[0].pos, Pos { line: 2, column: 5 });
        assert_eq!(items[1].pos, Pos { line: 3, column: 5 });
    }

    #[test]
    fn aliases_tags_and_second_documents_are_refused() {
        let (_, errors) = load("a: &x 1\nb: *x\n");
        assert_eq!(errors[0].pos, Pos { line: 2, column: 4 });
        let (_, errors) = load("a: !!str 1\n");
        assert_eq!(
            errors[0].message,
            "YAML tags are not supported in policy files"
        );
        let (_, errors) = load("a: 1\n---\nb: 2\n");
        assert_eq!(errors[0].pos, Pos { line: 2, column: 1 });
        let (root, errors) = load("# only a comment\n");
        assert!(root.is_none() && errors.is_empty());
    }
}
