//! The condition language of decision nodes.
//!
//! A decision node's `conditions` each carry a `when` string such as
//! `latest_upstream.output.score < 8 and exists(latest_upstream.output.notes)`. This module
//! parses such strings (a hand-written lexer and recursive-descent parser that reports byte
//! positions) and evaluates them against a node's input context (`inputs`, `upstream`,
//! `latest_upstream`, `context`, `run`, `node`; see FLOWCHART-FORMAT.md).
//!
//! # Grammar
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | compare
//! compare := operand (cmpop operand)?      cmpop: == != < <= > >= contains in
//! operand := "exists" "(" path ")" | "(" expr ")" | literal | path
//! path    := segment ("." segment)*
//! literal := any JSON value
//! ```
//!
//! * Keywords are the lowercase words `and or not contains in exists true false null`.
//! * The first segment of a path is an identifier `[A-Za-z_][A-Za-z0-9_-]*` that is not a
//!   keyword. Later segments follow a `.` directly (no whitespace) and are identifiers (keywords
//!   allowed: `inputs.in`) or non-negative integers without leading zeros (array indexes).
//! * Literals are JSON: numbers (negative, fraction, exponent), double-quoted strings with all
//!   JSON escapes (including `\uXXXX` surrogate pairs), `true`, `false`, `null`, arrays and
//!   objects (which contain JSON values only, not paths; duplicate object keys are an error).
//! * `not a and b` means `(not a) and b`; `and` binds tighter than `or`; comparisons do not
//!   chain (`a < b < c` is a parse error: add parentheses).
//! * Nesting (parentheses, `not`, array and object literals) is limited to
//!   [`MAX_NESTING`] levels.
//!
//! # Semantics
//!
//! Evaluation is strict and never coerces: routing decisions are recorded in the ledger and
//! must be reproducible and auditable, so a condition either has one obvious meaning or fails
//! loudly with an [`EvalError`] instead of guessing.
//!
//! * A path walks objects by key and arrays by index (an integer segment also selects the
//!   object key spelled by its digits). A path that does not resolve is
//!   [`EvalError::MissingPath`], except inside `exists(path)`, which is true when the path
//!   resolves (even to `null`), false otherwise, and never fails.
//! * `==` and `!=` are JSON equality: numbers compare by numeric value (`1 == 1.0`), values of
//!   different JSON types are unequal (`"8" == 8` is false), arrays and objects compare deeply.
//! * `<`, `<=`, `>`, `>=` need two numbers (numeric order) or two strings (Unicode code point
//!   order); anything else is [`EvalError::TypeMismatch`].
//! * `a contains b`: substring when both are strings; some element equal to `b` when `a` is an
//!   array; key present when `a` is an object and `b` a string; otherwise a type mismatch.
//!   `a in b` means `b contains a`.
//! * `and`, `or`, `not` need booleans ([`EvalError::NotBoolean`] otherwise); `and` and `or`
//!   short-circuit left to right, so `exists(x.y) and x.y > 3` is false, not an error, when
//!   `x.y` is missing.
//! * A bare operand used as the whole condition or as an operand of `and`, `or`, `not` must be
//!   a boolean (a path to `true` is fine). The result of a condition is a `bool`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// How deeply parentheses, `not` and JSON arrays/objects may nest in one condition.
pub const MAX_NESTING: usize = 64;

/// The longest value or source excerpt quoted in a reason or error message, in characters.
const MAX_QUOTE_CHARS: usize = 80;

const KEYWORDS: [&str; 9] = [
    "and", "or", "not", "contains", "in", "exists", "true", "false", "null",
];

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// A parsed condition. Keeps its source text.
///
/// Serializes as its source string; deserializing parses the string and fails on a parse
/// error. `Display` prints the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
}

/// Parses a condition.
///
/// # Errors
///
/// A [`ParseError`] with the byte position of the first problem.
pub fn parse(source: &str) -> Result<Condition, ParseError> {
    let mut parser = Parser::new(source);
    let expr = parser.parse_expr()?;
    parser.expect_end()?;
    Ok(Condition {
        source: source.to_owned(),
        expr,
    })
}

/// Parses a path on its own, e.g. `latest_upstream.output.score` (surrounding whitespace is
/// allowed). Same rules as a path inside a condition.
///
/// # Errors
///
/// A [`ParseError`] with the byte position of the first problem.
pub fn parse_path(source: &str) -> Result<Path, ParseError> {
    let mut parser = Parser::new(source);
    let path = parser.parse_path()?;
    parser.skip_ws();
    if parser.pos < source.len() {
        return Err(parser.error(
            parser.pos,
            format!("unexpected trailing input `{}`", parser.rest_excerpt()),
        ));
    }
    Ok(path)
}

impl Condition {
    /// The source text the condition was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every path the condition reads, in source order (including those inside `exists()`).
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        collect_paths(&self.expr, &mut out);
        out
    }

    /// Evaluates the condition against a node's input context.
    ///
    /// # Errors
    ///
    /// [`EvalError::MissingPath`], [`EvalError::TypeMismatch`] or [`EvalError::NotBoolean`]; see
    /// the module documentation.
    pub fn evaluate(&self, context: &Value) -> Result<bool, EvalError> {
        Walker {
            source: &self.source,
            explain: false,
        }
        .truth(&self.expr, context)
        .0
    }

    /// Same result as [`Condition::evaluate`] plus a one-line human reason, e.g.
    /// `latest_upstream.output.score (9) >= 8 is true` or
    /// `latest_upstream.output.score is missing`. Used in routing-decision events.
    pub fn evaluate_explained(&self, context: &Value) -> Evaluation {
        let (outcome, reason) = Walker {
            source: &self.source,
            explain: true,
        }
        .truth(&self.expr, context);
        Evaluation { outcome, reason }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Condition {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        parse(&source).map_err(|err| {
            serde::de::Error::custom(format_args!(
                "invalid condition `{}`: {err}",
                truncate(&source, MAX_QUOTE_CHARS)
            ))
        })
    }
}

/// The result of [`Condition::evaluate_explained`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Exactly what [`Condition::evaluate`] returns.
    pub outcome: Result<bool, EvalError>,
    /// One line saying why, e.g. `latest_upstream.output.score (9) >= 8 is true`.
    pub reason: String,
}

/// A dotted path into the input context, e.g. `upstream.review.output.items.0`.
///
/// `Display` prints the dotted text. The first segment is always a [`Segment::Key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<Segment>,
}

/// One segment of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object key (an identifier).
    Key(String),
    /// An array index (or the object key spelled by its digits).
    Index(usize),
}

impl Path {
    /// The first segment, e.g. `latest_upstream`.
    pub fn root(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Key(key)) => key,
            _ => "",
        }
    }

    /// All segments, the root first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The value the path points at, or `None` when it does not resolve: objects are walked by
    /// key, arrays by index (an index segment also selects an object key spelled by its digits).
    pub fn resolve<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |current, segment| match (segment, current) {
                (Segment::Key(key), Value::Object(map)) => map.get(key),
                (Segment::Index(index), Value::Array(items)) => items.get(*index),
                (Segment::Index(index), Value::Object(map)) => map.get(&index.to_string()),
                _ => None,
            })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{segment}")?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_path(s)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Key(key) => f.write_str(key),
            Segment::Index(index) => write!(f, "{index}"),
        }
    }
}

/// A condition that does not parse. Displays as `at column {position + 1}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the source.
    pub position: usize,
    /// What was expected and what was found, e.g. "expected an operand, found `)`".
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.position + 1, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A path (outside `exists()`) that does not resolve in the context.
    MissingPath {
        /// The dotted path.
        path: String,
    },
    /// An operator applied to values of types it does not accept.
    TypeMismatch {
        /// `<`, `<=`, `>`, `>=`, `contains` or `in`.
        operator: String,
        /// JSON type name of the left operand (`null`, `boolean`, `number`, `string`, `array`,
        /// `object`).
        left: String,
        /// JSON type name of the right operand.
        right: String,
    },
    /// A value used as a boolean (the whole condition, or an operand of `and`, `or`, `not`)
    /// that is not one.
    NotBoolean {
        /// JSON type name of the value found.
        found: String,
    },
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::MissingPath { path } => write!(f, "path `{path}` is missing"),
            EvalError::TypeMismatch {
                operator,
                left,
                right,
            } => write!(
                f,
                "type mismatch: `{operator}` cannot be applied to {left} and {right}"
            ),
            EvalError::NotBoolean { found } => write!(f, "expected a boolean, found {found}"),
        }
    }
}

impl std::error::Error for EvalError {}

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

/// A node of the syntax tree with its byte span in the source (used to quote it in reasons).
#[derive(Debug, Clone, PartialEq)]
struct Expr {
    kind: ExprKind,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum ExprKind {
    /// Two or more alternatives.
    Or(Vec<Expr>),
    /// Two or more conjuncts.
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Exists(Path),
    Path(Path),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    In,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::In => "in",
        }
    }
}

fn collect_paths<'a>(expr: &'a Expr, out: &mut Vec<&'a Path>) {
    match &expr.kind {
        ExprKind::Or(items) | ExprKind::And(items) => {
            for item in items {
                collect_paths(item, out);
            }
        }
        ExprKind::Not(inner) => collect_paths(inner, out),
        ExprKind::Compare { left, right, .. } => {
            collect_paths(left, out);
            collect_paths(right, out);
        }
        ExprKind::Exists(path) | ExprKind::Path(path) => out.push(path),
        ExprKind::Literal(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser
// ---------------------------------------------------------------------------------------------

/// The token at the parser's position, classified without consuming it. Strings and numbers
/// are lexed by their own functions when consumed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'s> {
    Eof,
    Word(&'s str),
    Number,
    Str,
    /// One of `( ) [ ] { } . , :`.
    Punct(u8),
    Cmp(CmpOp),
    /// A character that starts no token.
    Unknown(char),
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

struct Parser<'s> {
    src: &'s str,
    pos: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Self {
        Parser {
            src,
            pos: 0,
            depth: 0,
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    fn error(&self, position: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            position,
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        while self.byte(self.pos).is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn ident_end(&self, start: usize) -> usize {
        let mut end = start;
        while self.byte(end).is_some_and(is_ident_continue) {
            end += 1;
        }
        end
    }

    /// Skips whitespace and classifies the next token; returns it with its end offset (equal to
    /// the start for strings and numbers, whose extent is only known when they are lexed).
    fn peek(&mut self) -> (Tok<'s>, usize) {
        self.skip_ws();
        let start = self.pos;
        let Some(b) = self.byte(start) else {
            return (Tok::Eof, start);
        };
        let next = self.byte(start + 1);
        match b {
            b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'.' | b',' | b':' => {
                (Tok::Punct(b), start + 1)
            }
            b'"' => (Tok::Str, start),
            b'-' | b'0'..=b'9' => (Tok::Number, start),
            b'=' if next == Some(b'=') => (Tok::Cmp(CmpOp::Eq), start + 2),
            b'!' if next == Some(b'=') => (Tok::Cmp(CmpOp::Ne), start + 2),
            b'<' if next == Some(b'=') => (Tok::Cmp(CmpOp::Le), start + 2),
            b'<' => (Tok::Cmp(CmpOp::Lt), start + 1),
            b'>' if next == Some(b'=') => (Tok::Cmp(CmpOp::Ge), start + 2),
            b'>' => (Tok::Cmp(CmpOp::Gt), start + 1),
            _ if is_ident_start(b) => {
                let end = self.ident_end(start);
                match &self.src[start..end] {
                    "contains" => (Tok::Cmp(CmpOp::Contains), end),
                    "in" => (Tok::Cmp(CmpOp::In), end),
                    word => (Tok::Word(word), end),
                }
            }
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('\u{fffd}');
                (Tok::Unknown(c), start + c.len_utf8())
            }
        }
    }

    /// Describes the next token for a "found ..." message (skips whitespace first).
    fn describe_next(&mut self) -> String {
        let (tok, end) = self.peek();
        let start = self.pos;
        match tok {
            Tok::Eof => "end of input".to_owned(),
            Tok::Word(word) if is_keyword(word) => format!("keyword `{word}`"),
            Tok::Cmp(CmpOp::Contains | CmpOp::In) => {
                format!("keyword `{}`", &self.src[start..end])
            }
            Tok::Word(word) => format!("`{}`", truncate(word, MAX_QUOTE_CHARS)),
            Tok::Str => "a string".to_owned(),
            Tok::Number => {
                let mut end = start;
                while self
                    .byte(end)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
                {
                    end += 1;
                }
                format!("`{}`", truncate(&self.src[start..end], MAX_QUOTE_CHARS))
            }
            Tok::Punct(_) | Tok::Cmp(_) => format!("`{}`", &self.src[start..end]),
            Tok::Unknown(c) => describe_unknown(c),
        }
    }

    /// Describes the character at the position without skipping whitespace.
    fn describe_here(&mut self) -> String {
        match self.byte(self.pos) {
            None => "end of input".to_owned(),
            Some(b) if is_ws(b) => "whitespace".to_owned(),
            Some(_) => self.describe_next(),
        }
    }

    /// The rest of the input from the position, for "trailing input" messages.
    fn rest_excerpt(&self) -> String {
        truncate(self.src[self.pos..].trim_end(), 30)
    }

    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(
                at,
                format!("nesting is too deep (more than {MAX_NESTING} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Rejects a keyword directly followed by `.` (which would read as a path).
    fn reject_keyword_path(&self, word: &str, start: usize, end: usize) -> Result<(), ParseError> {
        if is_keyword(word) && self.byte(end) == Some(b'.') {
            return Err(self.error(
                start,
                format!("keyword `{word}` cannot be the first segment of a path"),
            ));
        }
        Ok(())
    }

    fn expect_end(&mut self) -> Result<(), ParseError> {
        let (tok, _) = self.peek();
        let at = self.pos;
        match tok {
            Tok::Eof => Ok(()),
            Tok::Punct(b')') => Err(self.error(at, "unmatched `)`")),
            Tok::Unknown(c) => Err(self.error(at, format!("unexpected {}", describe_unknown(c)))),
            _ => Err(self.error(
                at,
                format!("unexpected trailing input `{}`", self.rest_excerpt()),
            )),
        }
    }

    fn parse_expr(&mut self) -> Result<Expr, ParseError> {
        self.parse_or()
    }

    fn parse_or(&mut self) -> Result<Expr, ParseError> {
        let first = self.parse_and()?;
        let mut items = vec![first];
        while let (Tok::Word("or"), end) = self.peek() {
            self.pos = end;
            items.push(self.parse_and()?);
        }
        Ok(join_items(items, ExprKind::Or))
    }

    fn parse_and(&mut self) -> Result<Expr, ParseError> {
        let first = self.parse_unary()?;
        let mut items = vec![first];
        while let (Tok::Word("and"), end) = self.peek() {
            self.pos = end;
            items.push(self.parse_unary()?);
        }
        Ok(join_items(items, ExprKind::And))
    }

    fn parse_unary(&mut self) -> Result<Expr, ParseError> {
        if let (Tok::Word("not"), end) = self.peek() {
            let start = self.pos;
            self.reject_keyword_path("not", start, end)?;
            self.enter(start)?;
            self.pos = end;
            let inner = self.parse_unary()?;
            self.leave();
            let end = inner.end;
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                start,
                end,
            });
        }
        self.parse_compare()
    }

    fn parse_compare(&mut self) -> Result<Expr, ParseError> {
        let left = self.parse_operand()?;
        let (Tok::Cmp(op), end) = self.peek() else {
            return Ok(left);
        };
        self.pos = end;
        let right = self.parse_operand()?;
        if let (Tok::Cmp(next), _) = self.peek() {
            return Err(self.error(
                self.pos,
                format!(
                    "expected `and`, `or` or end of input, found `{}` (comparisons cannot be \
                     chained; use parentheses and `and`)",
                    next.as_str()
                ),
            ));
        }
        let (start, end) = (left.start, right.end);
        Ok(Expr {
            kind: ExprKind::Compare {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
            start,
            end,
        })
    }

    fn parse_operand(&mut self) -> Result<Expr, ParseError> {
        let (tok, end) = self.peek();
        let start = self.pos;
        let kind = match tok {
            Tok::Word("exists") => {
                self.reject_keyword_path("exists", start, end)?;
                self.pos = end;
                match self.peek() {
                    (Tok::Punct(b'('), paren_end) => self.pos = paren_end,
                    _ => {
                        let found = self.describe_next();
                        return Err(self.error(
                            self.pos,
                            format!("expected `(` after `exists`, found {found}"),
                        ));
                    }
                }
                let path = self.parse_path()?;
                match self.peek() {
                    (Tok::Punct(b')'), paren_end) => self.pos = paren_end,
                    _ => {
                        let found = self.describe_next();
                        return Err(self.error(
                            self.pos,
                            format!("expected `)` after the path of `exists(`, found {found}"),
                        ));
                    }
                }
                ExprKind::Exists(path)
            }
            Tok::Punct(b'(') => {
                self.enter(start)?;
                self.pos = end;
                let inner = self.parse_expr()?;
                match self.peek() {
                    (Tok::Punct(b')'), paren_end) => self.pos = paren_end,
                    _ => {
                        let found = self.describe_next();
                        return Err(self.error(
                            self.pos,
                            format!(
                                "expected `)` to close the `(` at column {}, found {found}",
                                start + 1
                            ),
                        ));
                    }
                }
                self.leave();
                return Ok(Expr {
                    kind: inner.kind,
                    start,
                    end: self.pos,
                });
            }
            Tok::Word("true" | "false" | "null")
            | Tok::Number
            | Tok::Str
            | Tok::Punct(b'[' | b'{') => {
                if let Tok::Word(word) = tok {
                    self.reject_keyword_path(word, start, end)?;
                }
                ExprKind::Literal(self.parse_json()?)
            }
            Tok::Word(word) if !is_keyword(word) => ExprKind::Path(self.parse_path()?),
            _ => {
                if self.byte(start).is_some_and(is_ident_start) {
                    self.reject_keyword_path(&self.src[start..end], start, end)?;
                }
                let found = self.describe_next();
                return Err(self.error(start, format!("expected an operand, found {found}")));
            }
        };
        Ok(Expr {
            kind,
            start,
            end: self.pos,
        })
    }

    fn parse_path(&mut self) -> Result<Path, ParseError> {
        let (tok, end) = self.peek();
        let start = self.pos;
        let first = match tok {
            Tok::Word(word) if !is_keyword(word) => word,
            _ => {
                let found = self.describe_next();
                return Err(self.error(start, format!("expected a path, found {found}")));
            }
        };
        self.pos = end;
        let mut segments = vec![Segment::Key(first.to_owned())];
        while self.byte(self.pos) == Some(b'.') {
            self.pos += 1;
            let seg_start = self.pos;
            match self.byte(seg_start) {
                Some(b) if is_ident_start(b) => {
                    let seg_end = self.ident_end(seg_start);
                    segments.push(Segment::Key(self.src[seg_start..seg_end].to_owned()));
                    self.pos = seg_end;
                }
                Some(b) if b.is_ascii_digit() => {
                    let mut seg_end = seg_start;
                    while self.byte(seg_end).is_some_and(|b| b.is_ascii_digit()) {
                        seg_end += 1;
                    }
                    let digits = &self.src[seg_start..seg_end];
                    if self.byte(seg_end).is_some_and(is_ident_continue) {
                        return Err(self.error(
                            seg_start,
                            "a path segment is an identifier or an array index, and an \
                             identifier cannot start with a digit",
                        ));
                    }
                    if digits.len() > 1 && digits.starts_with('0') {
                        return Err(self.error(
                            seg_start,
                            format!("array index `{digits}` has a leading zero"),
                        ));
                    }
                    let index = digits.parse::<usize>().map_err(|_| {
                        self.error(seg_start, format!("array index `{digits}` is too large"))
                    })?;
                    segments.push(Segment::Index(index));
                    self.pos = seg_end;
                }
                _ => {
                    let found = self.describe_here();
                    return Err(self.error(
                        seg_start,
                        format!("expected a path segment after `.`, found {found}"),
                    ));
                }
            }
        }
        Ok(Path { segments })
    }

    /// Parses one JSON value at the position (after whitespace).
    fn parse_json(&mut self) -> Result<Value, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.byte(start) {
            Some(b'{') => {
                self.enter(start)?;
                self.pos += 1;
                let mut map = Map::new();
                self.skip_ws();
                if self.byte(self.pos) == Some(b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        let key_pos = self.pos;
                        if self.byte(key_pos) != Some(b'"') {
                            let found = self.describe_next();
                            return Err(self.error(
                                key_pos,
                                format!("expected a string key in object, found {found}"),
                            ));
                        }
                        let key = self.lex_string()?;
                        if map.contains_key(&key) {
                            return Err(self.error(
                                key_pos,
                                format!(
                                    "duplicate key `{}` in object",
                                    truncate(&key, MAX_QUOTE_CHARS)
                                ),
                            ));
                        }
                        self.skip_ws();
                        if self.byte(self.pos) != Some(b':') {
                            let found = self.describe_next();
                            return Err(self.error(
                                self.pos,
                                format!("expected `:` after object key, found {found}"),
                            ));
                        }
                        self.pos += 1;
                        let value = self.parse_json()?;
                        map.insert(key, value);
                        self.skip_ws();
                        match self.byte(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => {
                                let found = self.describe_next();
                                return Err(self.error(
                                    self.pos,
                                    format!("expected `,` or `}}` in object, found {found}"),
                                ));
                            }
                        }
                    }
                }
                self.leave();
                Ok(Value::Object(map))
            }
            Some(b'[') => {
                self.enter(start)?;
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.byte(self.pos) == Some(b']') {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.parse_json()?);
                        self.skip_ws();
                        match self.byte(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => {
                                let found = self.describe_next();
                                return Err(self.error(
                                    self.pos,
                                    format!("expected `,` or `]` in array, found {found}"),
                                ));
                            }
                        }
                    }
                }
                self.leave();
                Ok(Value::Array(items))
            }
            Some(b'"') => self.lex_string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.lex_number(),
            Some(b) if is_ident_start(b) => {
                let end = self.ident_end(start);
                let value = match &self.src[start..end] {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    word => {
                        return Err(self.error(
                            start,
                            format!(
                                "expected a JSON value, found `{}` (literals cannot contain paths)",
                                truncate(word, MAX_QUOTE_CHARS)
                            ),
                        ));
                    }
                };
                self.pos = end;
                Ok(value)
            }
            _ => {
                let found = self.describe_next();
                Err(self.error(start, format!("expected a JSON value, found {found}")))
            }
        }
    }

    /// Lexes a JSON number at the position.
    fn lex_number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let digit_at = |p: &Self, at: usize| p.byte(at).is_some_and(|b| b.is_ascii_digit());
        let mut i = start;
        if self.byte(i) == Some(b'-') {
            i += 1;
        }
        if self.byte(i) == Some(b'0') {
            i += 1;
            if digit_at(self, i) {
                return Err(self.error(start, "numbers cannot have leading zeros"));
            }
        } else if digit_at(self, i) {
            while digit_at(self, i) {
                i += 1;
            }
        } else {
            self.pos = i;
            let found = self.describe_here();
            return Err(self.error(i, format!("expected a digit after `-`, found {found}")));
        }
        if self.byte(i) == Some(b'.') {
            i += 1;
            if !digit_at(self, i) {
                self.pos = i;
                let found = self.describe_here();
                return Err(self.error(
                    i,
                    format!("expected a digit after the decimal point, found {found}"),
                ));
            }
            while digit_at(self, i) {
                i += 1;
            }
        }
        if matches!(self.byte(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(self.byte(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digit_at(self, i) {
                self.pos = i;
                let found = self.describe_here();
                return Err(self.error(
                    i,
                    format!("expected a digit in the exponent, found {found}"),
                ));
            }
            while digit_at(self, i) {
                i += 1;
            }
        }
        if let Some(b) = self.byte(i)
            && (is_ident_continue(b) || b == b'.')
        {
            return Err(self.error(i, format!("unexpected `{}` after number", char::from(b))));
        }
        let text = &self.src[start..i];
        let number = text.parse::<Number>().map_err(|_| {
            self.error(
                start,
                format!(
                    "number `{}` is out of range",
                    truncate(text, MAX_QUOTE_CHARS)
                ),
            )
        })?;
        self.pos = i;
        Ok(Value::Number(number))
    }

    /// Lexes a JSON string at the position (which holds the opening `"`).
    fn lex_string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let unterminated = |p: &Self| p.error(start, "unterminated string");
        let mut out = String::new();
        let mut i = start + 1;
        loop {
            let Some(b) = self.byte(i) else {
                return Err(unterminated(self));
            };
            match b {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(out);
                }
                b'\\' => {
                    let Some(escape) = self.byte(i + 1) else {
                        return Err(unterminated(self));
                    };
                    let simple = match escape {
                        b'"' => Some('"'),
                        b'\\' => Some('\\'),
                        b'/' => Some('/'),
                        b'b' => Some('\u{8}'),
                        b'f' => Some('\u{c}'),
                        b'n' => Some('\n'),
                        b'r' => Some('\r'),
                        b't' => Some('\t'),
                        _ => None,
                    };
                    if let Some(c) = simple {
                        out.push(c);
                        i += 2;
                    } else if escape == b'u' {
                        let (c, next) = self.lex_unicode_escape(i)?;
                        out.push(c);
                        i = next;
                    } else {
                        let c = self.src[i + 1..].chars().next().unwrap_or('\u{fffd}');
                        return Err(self.error(i, format!("invalid escape `\\{c}` in string")));
                    }
                }
                0x00..=0x1f => {
                    return Err(self.error(
                        i,
                        format!(
                            "control character U+{b:04X} in string (write it as an escape such \
                             as `\\n` or `\\u{b:04x}`)"
                        ),
                    ));
                }
                _ => {
                    let c = self.src[i..].chars().next().unwrap_or('\u{fffd}');
                    out.push(c);
                    i += c.len_utf8();
                }
            }
        }
    }

    /// Reads four hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.src.get(at..at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    }

    /// Lexes `\uXXXX` (and a following low surrogate) at `at` (the backslash); returns the
    /// character and the offset after the escape.
    fn lex_unicode_escape(&self, at: usize) -> Result<(char, usize), ParseError> {
        let invalid = || {
            self.error(
                at,
                "invalid unicode escape: expected `\\u` followed by 4 hex digits",
            )
        };
        let unit = self.hex4(at + 2).ok_or_else(invalid)?;
        match unit {
            0xD800..=0xDBFF => {
                let low_at = at + 6;
                let low = if self.src.get(low_at..low_at + 2) == Some("\\u") {
                    self.hex4(low_at + 2)
                } else {
                    None
                };
                match low {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        let c = char::from_u32(code).ok_or_else(invalid)?;
                        Ok((c, at + 12))
                    }
                    _ => Err(self.error(
                        at,
                        format!(
                            "unpaired surrogate `\\u{unit:04X}` in string (a high surrogate \
                             must be followed by a `\\uDC00`-`\\uDFFF` escape)"
                        ),
                    )),
                }
            }
            0xDC00..=0xDFFF => {
                Err(self.error(at, format!("unpaired surrogate `\\u{unit:04X}` in string")))
            }
            _ => {
                let c = char::from_u32(unit).ok_or_else(invalid)?;
                Ok((c, at + 6))
            }
        }
    }
}

fn describe_unknown(c: char) -> String {
    let hint = match c {
        '=' => " (use `==` to compare)",
        '!' => " (use `!=` or `not`)",
        '&' => " (use `and`)",
        '|' => " (use `or`)",
        '\'' => " (strings use double quotes)",
        _ => "",
    };
    format!("`{c}`{hint}")
}

fn join_items(mut items: Vec<Expr>, kind: fn(Vec<Expr>) -> ExprKind) -> Expr {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    let start = items.first().map_or(0, |e| e.start);
    let end = items.last().map_or(0, |e| e.end);
    Expr {
        kind: kind(items),
        start,
        end,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

fn bool_value(b: bool) -> &'static Value {
    if b { &TRUE } else { &FALSE }
}

/// The JSON type name of a value, as used in [`EvalError`].
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`); different types are unequal.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Ordering::Equal,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => false,
    }
}

/// An integer held exactly, or a float.
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

/// Exact numeric order of two JSON numbers (integers beyond 2^53 are not rounded).
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (num(a), num(b)) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Int(x), Num::Float(y)) => compare_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => compare_int_float(y, x).reverse(),
    }
}

fn compare_int_float(i: i128, f: f64) -> Ordering {
    // 2^127 as f64; every finite f64 with a smaller magnitude truncates to an exact i128.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() {
        return Ordering::Equal;
    }
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // Exact: `whole` is integral and within the range of i128.
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

fn type_mismatch(op: CmpOp, left: &Value, right: &Value) -> EvalError {
    EvalError::TypeMismatch {
        operator: op.as_str().to_owned(),
        left: json_type_name(left).to_owned(),
        right: json_type_name(right).to_owned(),
    }
}

/// `haystack contains needle`, or `None` when the types do not allow it.
fn contains(haystack: &Value, needle: &Value) -> Option<bool> {
    match (haystack, needle) {
        (Value::String(h), Value::String(n)) => Some(h.contains(n.as_str())),
        (Value::Array(items), _) => Some(items.iter().any(|item| json_equal(item, needle))),
        (Value::Object(map), Value::String(key)) => Some(map.contains_key(key)),
        _ => None,
    }
}

fn apply(op: CmpOp, left: &Value, right: &Value) -> Result<bool, EvalError> {
    let order = |left: &Value, right: &Value| match (left, right) {
        (Value::Number(x), Value::Number(y)) => Ok(compare_numbers(x, y)),
        (Value::String(x), Value::String(y)) => Ok(x.as_str().cmp(y.as_str())),
        _ => Err(type_mismatch(op, left, right)),
    };
    match op {
        CmpOp::Eq => Ok(json_equal(left, right)),
        CmpOp::Ne => Ok(!json_equal(left, right)),
        CmpOp::Lt => order(left, right).map(Ordering::is_lt),
        CmpOp::Le => order(left, right).map(Ordering::is_le),
        CmpOp::Gt => order(left, right).map(Ordering::is_gt),
        CmpOp::Ge => order(left, right).map(Ordering::is_ge),
        CmpOp::Contains => contains(left, right).ok_or_else(|| type_mismatch(op, left, right)),
        CmpOp::In => contains(right, left).ok_or_else(|| type_mismatch(op, left, right)),
    }
}

/// Truncates to `max` characters, marking the cut with `…`.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Compact JSON of a value for reasons, truncated.
fn render(value: &Value) -> String {
    truncate(
        &serde_json::to_string(value).unwrap_or_default(),
        MAX_QUOTE_CHARS,
    )
}

/// Walks the syntax tree; builds reasons only when `explain` is set.
struct Walker<'s> {
    source: &'s str,
    explain: bool,
}

type Step<T> = (Result<T, EvalError>, String);

impl Walker<'_> {
    fn text(&self, expr: &Expr) -> String {
        truncate(
            self.source.get(expr.start..expr.end).unwrap_or_default(),
            MAX_QUOTE_CHARS,
        )
    }

    fn why(&self, reason: impl FnOnce() -> String) -> String {
        if self.explain {
            reason()
        } else {
            String::new()
        }
    }

    fn missing<T>(&self, path: &Path) -> Step<T> {
        (
            Err(EvalError::MissingPath {
                path: path.to_string(),
            }),
            self.why(|| format!("{path} is missing")),
        )
    }

    /// Evaluates an expression that must be a boolean.
    fn truth(&self, expr: &Expr, ctx: &Value) -> Step<bool> {
        match &expr.kind {
            ExprKind::Or(items) | ExprKind::And(items) => {
                // `or` stops at the first true operand, `and` at the first false one.
                let stop_at = matches!(expr.kind, ExprKind::Or(_));
                let mut reasons = Vec::new();
                for item in items {
                    let (result, reason) = self.truth(item, ctx);
                    match result {
                        Ok(b) if b == stop_at => return (Ok(b), reason),
                        Ok(_) => reasons.push(reason),
                        Err(err) => return (Err(err), reason),
                    }
                }
                (Ok(!stop_at), self.why(|| reasons.join(" and ")))
            }
            ExprKind::Not(inner) => {
                let (result, reason) = self.truth(inner, ctx);
                match result {
                    Ok(b) => (
                        Ok(!b),
                        self.why(|| format!("{} is {} because {reason}", self.text(expr), !b)),
                    ),
                    Err(err) => (Err(err), reason),
                }
            }
            ExprKind::Compare { op, left, right } => {
                let (left_value, reason) = self.value(left, ctx);
                let left_value = match left_value {
                    Ok(v) => v,
                    Err(err) => return (Err(err), reason),
                };
                let (right_value, reason) = self.value(right, ctx);
                let right_value = match right_value {
                    Ok(v) => v,
                    Err(err) => return (Err(err), reason),
                };
                let described = || {
                    format!(
                        "{} {} {}",
                        self.describe(left, left_value),
                        op.as_str(),
                        self.describe(right, right_value)
                    )
                };
                match apply(*op, left_value, right_value) {
                    Ok(b) => (Ok(b), self.why(|| format!("{} is {b}", described()))),
                    Err(err) => {
                        let reason =
                            self.why(|| format!("{} cannot be evaluated: {err}", described()));
                        (Err(err), reason)
                    }
                }
            }
            ExprKind::Exists(path) => {
                let b = path.resolve(ctx).is_some();
                (Ok(b), self.why(|| format!("{} is {b}", self.text(expr))))
            }
            ExprKind::Path(path) => match path.resolve(ctx) {
                Some(value) => self.expect_bool(expr, value, true),
                None => self.missing(path),
            },
            ExprKind::Literal(value) => self.expect_bool(expr, value, false),
        }
    }

    fn expect_bool(&self, expr: &Expr, value: &Value, show_value: bool) -> Step<bool> {
        match value {
            Value::Bool(b) => (Ok(*b), self.why(|| format!("{} is {b}", self.text(expr)))),
            other => (
                Err(EvalError::NotBoolean {
                    found: json_type_name(other).to_owned(),
                }),
                self.why(|| {
                    if show_value {
                        format!("{} ({}) is not a boolean", self.text(expr), render(other))
                    } else {
                        format!("{} is not a boolean", self.text(expr))
                    }
                }),
            ),
        }
    }

    /// Evaluates a comparison operand to a value.
    fn value<'a>(&self, expr: &'a Expr, ctx: &'a Value) -> Step<&'a Value> {
        match &expr.kind {
            ExprKind::Path(path) => match path.resolve(ctx) {
                Some(value) => (Ok(value), String::new()),
                None => self.missing(path),
            },
            ExprKind::Literal(value) => (Ok(value), String::new()),
            _ => {
                let (result, reason) = self.truth(expr, ctx);
                (result.map(bool_value), reason)
            }
        }
    }

    /// An operand in a reason: a literal as written, anything else with its value.
    fn describe(&self, expr: &Expr, value: &Value) -> String {
        match expr.kind {
            ExprKind::Literal(_) => self.text(expr),
            _ => format!("{} ({})", self.text(expr), render(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "inputs": { "topic": "rust", "in": 1, "and": { "or": { "not": true } }, "exists": null },
            "flag": true,
            "off": false,
            "score": 9,
            "half": 0.5,
            "neg": -3,
            "name": "hello world",
            "nothing": null,
            "items": [ { "name": "a" }, { "name": "b" }, [10, 20] ],
            "tags": ["x", "y", 1, null],
            "obj": { "k": 1, "0": "zero" },
            "empty": {},
            "big": 9007199254740993_u64,
            "max": 18446744073709551615_u64,
            "text": "a\"b\\c\n😀é"
        })
    }

    fn eval(source: &str) -> Result<bool, EvalError> {
        let condition = parse(source).unwrap_or_else(|e| panic!("`{source}` must parse: {e}"));
        let plain = condition.evaluate(&ctx());
        let explained = condition.evaluate_explained(&ctx());
        assert_eq!(
            plain, explained.outcome,
            "evaluate and evaluate_explained differ for `{source}`"
        );
        plain
    }

    fn check(source: &str, expected: bool) {
        assert_eq!(eval(source), Ok(expected), "`{source}`");
    }

    fn parse_err(source: &str) -> ParseError {
        match parse(source) {
            Ok(c) => panic!("`{source}` must not parse, got {c:?}"),
            Err(e) => e,
        }
    }

    fn assert_parse_err(source: &str, position: usize, message: &str) {
        let err = parse_err(source);
        assert_eq!(err.position, position, "position for `{source}`: {err}");
        assert_eq!(err.message, message, "message for `{source}`");
    }

    fn mismatch(operator: &str, left: &str, right: &str) -> Result<bool, EvalError> {
        Err(EvalError::TypeMismatch {
            operator: operator.to_owned(),
            left: left.to_owned(),
            right: right.to_owned(),
        })
    }

    fn missing(path: &str) -> Result<bool, EvalError> {
        Err(EvalError::MissingPath {
            path: path.to_owned(),
        })
    }

    fn not_boolean(found: &str) -> Result<bool, EvalError> {
        Err(EvalError::NotBoolean {
            found: found.to_owned(),
        })
    }

    fn reason(source: &str, context: &Value) -> String {
        parse(source)
            .expect("parses")
            .evaluate_explained(context)
            .reason
    }

    #[test]
    fn not_binds_tighter_than_and() {
        // (not off) and off = false; not (off and off) would be true.
        check("not off and off", false);
        check("not (off and off)", true);
        let c = parse("not off and off").expect("parses");
        assert!(
            matches!(c.expr.kind, ExprKind::And(ref items) if matches!(items[0].kind, ExprKind::Not(_)))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // flag or (off and off) = true; (flag or off) and off = false.
        check("flag or off and off", true);
        check("(flag or off) and off", false);
        check("off and off or flag", true);
        check("off and (off or flag)", false);
        let c = parse("a or b and c").expect("parses");
        assert!(
            matches!(c.expr.kind, ExprKind::Or(ref items) if items.len() == 2 && matches!(items[1].kind, ExprKind::And(_)))
        );
    }

    #[test]
    fn not_applies_to_a_whole_comparison_and_nests() {
        check("not score in [1, 2]", true);
        check("not score == 9", false);
        check("not not flag", true);
        check("not (not (flag))", true);
        check("((((score == 9))))", true);
    }

    #[test]
    fn chains_of_and_or_evaluate_all_operands() {
        check("flag and flag and score > 1 and name != \"x\"", true);
        check("flag and flag and off", false);
        check("off or off or off", false);
        check("off or off or flag", true);
    }

    #[test]
    fn equality_operators() {
        check("score == 9", true);
        check("score == 8", false);
        check("score != 8", true);
        check("score != 9", false);
        check("name == \"hello world\"", true);
        check("name == \"hello\"", false);
        check("nothing == null", true);
        check("nothing != null", false);
        check("flag == true", true);
        check("flag == false", false);
        check(
            "items == [{\"name\": \"a\"}, {\"name\": \"b\"}, [10, 20]]",
            true,
        );
        check("items.2 == [10, 20.0]", true);
        check("items.2 == [20, 10]", false);
    }

    #[test]
    fn equality_never_coerces_between_types() {
        check("\"8\" == 8", false);
        check("\"8\" != 8", true);
        check("nothing == false", false);
        check("0 == false", false);
        check("\"\" == null", false);
        check("[] == {}", false);
        check("[1] == 1", false);
        check("\"true\" == flag", false);
    }

    #[test]
    fn ordering_operators_on_numbers() {
        check("score < 10", true);
        check("score < 9", false);
        check("score <= 9", true);
        check("score <= 8", false);
        check("score > 8", true);
        check("score > 9", false);
        check("score >= 9", true);
        check("score >= 10", false);
        check("half < 1", true);
        check("neg < half", true);
        check("neg > -3.5", true);
    }

    #[test]
    fn ordering_operators_on_strings_use_code_points() {
        check("\"a\" < \"b\"", true);
        check("\"b\" < \"a\"", false);
        check("\"Z\" < \"a\"", true);
        check("\"é\" > \"z\"", true);
        check("\"abc\" <= \"abc\"", true);
        check("\"ab\" < \"abc\"", true);
        check("\"😀\" > \"\\uffff\"", true);
        check("name >= \"hello\"", true);
    }

    #[test]
    fn numbers_in_every_json_form() {
        check("1 == 1.0", true);
        check("1.0 == 1", true);
        check("-2.5 < -2", true);
        check("-0 == 0", true);
        check("0.0 == -0.0", true);
        check("1e3 == 1000", true);
        check("1E3 == 1000", true);
        check("1.5e+2 == 150", true);
        check("2e-1 == 0.2", true);
        check("-1.25E-2 == -0.0125", true);
        check("half == 5e-1", true);
        check("neg == -3.0", true);
        check("score > 8.999", true);
        check("score < 9.001", true);
    }

    #[test]
    fn large_integers_compare_exactly() {
        // 2^53 + 1 is not representable as f64; it must still differ from 2^53.
        check("big > 9007199254740992.0", true);
        check("big == 9007199254740992.0", false);
        check("big == 9007199254740993", true);
        check("max == 18446744073709551615", true);
        check("max > 9223372036854775807", true);
        check("-1 < max", true);
        check("max < 1e300", true);
        check("-9223372036854775808 < -9223372036854775807", true);
        check("-1e300 < -9223372036854775808", true);
    }

    #[test]
    fn number_directly_followed_by_parenthesis() {
        check("(score>8)", true);
        check("(score>=-8.5e1)", true);
        check("(score in [1,9])", true);
        check("(score==9)and(half<1)", true);
        check("exists(score)and(9==score)", true);
    }

    #[test]
    fn strings_with_escapes_and_unicode() {
        check(r#"text == "a\"b\\c\n😀é""#, true);
        check(r#"text == "a\"b\\c\n\ud83d\ude00\u00e9""#, true);
        check(r#"text == "a\"b\\c\u000A\uD83D\uDE00\u00E9""#, true);
        check(r#""\/" == "/""#, true);
        check(r#""\b\f\r\t" == "\u0008\u000c\u000d\u0009""#, true);
        check(r#""\u0041" == "A""#, true);
        check(r#""" == """#, true);
        check(r#""a b" contains " ""#, true);
        let c = parse(r#"x == "\ud83d\ude00""#).expect("parses");
        let ExprKind::Compare { right, .. } = &c.expr.kind else {
            panic!("expected a comparison");
        };
        assert_eq!(right.kind, ExprKind::Literal(json!("😀")));
    }

    #[test]
    fn array_and_object_literals() {
        check(r#"obj == {"0": "zero", "k": 1}"#, true);
        check(r#"obj == {"k": 1.0, "0": "zero"}"#, true);
        check(r#"obj == {"k": 1}"#, false);
        check(r#"obj == {"k": 1, "0": "zero", "z": null}"#, false);
        check("empty == {}", true);
        check("empty == { }", true);
        check("[] == []", true);
        check("[ ] != [null]", true);
        check(
            r#"[1, "a", {"k": [true, null, {"n": -1.5e0}]}] == [1.0, "a", {"k": [true, null, {"n": -1.5}]}]"#,
            true,
        );
        check("[[[]]] != [[]]", true);
        let c = parse(r#"x == { "a" : [ 1 , { "b" : "\u00e9" } ] , "c":false }"#).expect("parses");
        let ExprKind::Compare { right, .. } = &c.expr.kind else {
            panic!("expected a comparison");
        };
        assert_eq!(
            right.kind,
            ExprKind::Literal(json!({"a": [1, {"b": "é"}], "c": false}))
        );
    }

    #[test]
    fn in_with_arrays() {
        check(r#""x" in tags"#, true);
        check(r#""z" in tags"#, false);
        check("1.0 in tags", true);
        check("null in tags", true);
        check(r#"name in ["hello world", "bye"]"#, true);
        check(r#"name in ["bye"]"#, false);
        check("score in [1, 2]", false);
        check("score in []", false);
        check("[10, 20] in items", true);
        check(r#"{"name": "b"} in items"#, true);
    }

    #[test]
    fn contains_on_strings_arrays_and_objects() {
        check(r#"name contains "lo wo""#, true);
        check(r#"name contains "bye""#, false);
        check(r#"name contains """#, true);
        check(r#"tags contains "y""#, true);
        check("tags contains 2", false);
        check("items.2 contains 20.0", true);
        check(r#"obj contains "k""#, true);
        check(r#"obj contains "missing""#, false);
        check(r#"obj contains "0""#, true);
        check(r#""ell" in name"#, true);
        check(r#""k" in obj"#, true);
        check(r#""q" in obj"#, false);
    }

    #[test]
    fn exists_on_present_null_and_missing() {
        check("exists(score)", true);
        check("exists(nothing)", true);
        check("exists(inputs.exists)", true);
        check("exists(nope)", false);
        check("exists(inputs.nope)", false);
        check("exists(nope.deeper.still)", false);
        check("exists(name.length)", false);
        check("exists(items.1.name)", true);
        check("exists(items.3)", false);
        check("exists( score )", true);
        check("not exists(nope)", true);
        check("exists(score) == true", true);
    }

    #[test]
    fn and_or_short_circuit_left_to_right() {
        check("exists(inputs.nope) and inputs.nope > 3", false);
        check("flag or inputs.nope > 3", true);
        check("off and 1", false);
        check("flag or \"not a boolean\"", true);
        assert_eq!(eval("inputs.nope > 3 and off"), missing("inputs.nope"));
        assert_eq!(eval("off or inputs.nope > 3"), missing("inputs.nope"));
        assert_eq!(eval("1 and off"), not_boolean("number"));
    }

    #[test]
    fn missing_paths_are_errors() {
        assert_eq!(eval("nope == 1"), missing("nope"));
        assert_eq!(eval("1 == inputs.topic.x"), missing("inputs.topic.x"));
        assert_eq!(eval("items.7.name == \"a\""), missing("items.7.name"));
        assert_eq!(eval("items.name == \"a\""), missing("items.name"));
        assert_eq!(eval("nope"), missing("nope"));
        assert_eq!(eval("not nope"), missing("nope"));
        assert_eq!(eval("nope != null"), missing("nope"));
        // The left operand is evaluated first.
        assert_eq!(eval("a.b == c.d"), missing("a.b"));
    }

    #[test]
    fn type_mismatches() {
        assert_eq!(eval("\"9\" >= 8"), mismatch(">=", "string", "number"));
        assert_eq!(eval("score < \"10\""), mismatch("<", "number", "string"));
        assert_eq!(eval("flag > off"), mismatch(">", "boolean", "boolean"));
        assert_eq!(eval("nothing <= 1"), mismatch("<=", "null", "number"));
        assert_eq!(eval("tags < tags"), mismatch("<", "array", "array"));
        assert_eq!(
            eval("score contains 9"),
            mismatch("contains", "number", "number")
        );
        assert_eq!(
            eval("name contains 1"),
            mismatch("contains", "string", "number")
        );
        assert_eq!(
            eval("obj contains 1"),
            mismatch("contains", "object", "number")
        );
        assert_eq!(eval("5 in \"abc\""), mismatch("in", "number", "string"));
        assert_eq!(eval("\"a\" in 5"), mismatch("in", "string", "number"));
        assert_eq!(eval("\"k\" in nothing"), mismatch("in", "string", "null"));
    }

    #[test]
    fn non_booleans_where_booleans_are_needed() {
        assert_eq!(eval("score"), not_boolean("number"));
        assert_eq!(eval("name"), not_boolean("string"));
        assert_eq!(eval("nothing"), not_boolean("null"));
        assert_eq!(eval("\"true\""), not_boolean("string"));
        assert_eq!(eval("not 1"), not_boolean("number"));
        assert_eq!(eval("flag and tags"), not_boolean("array"));
        assert_eq!(eval("off or obj"), not_boolean("object"));
        check("flag", true);
        check("off", false);
        check("true", true);
        check("false", false);
        check("inputs.and.or.not", true);
    }

    #[test]
    fn array_index_paths() {
        check("items.0.name == \"a\"", true);
        check("items.1.name == \"b\"", true);
        check("items.2.1 == 20", true);
        check("tags.3 == null", true);
        check("obj.0 == \"zero\"", true);
        let p = parse_path("items.2.1").expect("parses");
        assert_eq!(
            p.segments(),
            &[
                Segment::Key("items".into()),
                Segment::Index(2),
                Segment::Index(1)
            ]
        );
        assert_eq!(p.resolve(&ctx()), Some(&json!(20)));
        assert_eq!(parse_path("items.x").expect("parses").resolve(&ctx()), None);
        assert_eq!(parse_path("score.0").expect("parses").resolve(&ctx()), None);
    }

    #[test]
    fn keywords_are_allowed_after_a_dot() {
        check("inputs.in == 1", true);
        check("inputs.and.or.not == true", true);
        check("exists(inputs.exists)", true);
        check("exists(inputs.contains) or inputs.in == 1", true);
        assert_eq!(eval("inputs.contains == 1"), missing("inputs.contains"));
        let p = parse_path("inputs.not.true.null").expect("parses");
        assert_eq!(p.to_string(), "inputs.not.true.null");
    }

    #[test]
    fn parse_error_unterminated_string() {
        assert_parse_err("a == \"abc", 5, "unterminated string");
        assert_parse_err("a == \"abc\\\"", 5, "unterminated string");
        assert_parse_err("a == \"abc\\", 5, "unterminated string");
        assert_eq!(
            parse_err("a == \"abc").to_string(),
            "at column 6: unterminated string"
        );
    }

    #[test]
    fn parse_error_missing_operand() {
        assert_parse_err("a ==", 4, "expected an operand, found end of input");
        assert_parse_err("a == )", 5, "expected an operand, found `)`");
        assert_parse_err("a and", 5, "expected an operand, found end of input");
        assert_parse_err(
            "a or or b",
            5,
            "expected an operand, found `or`"
                .replace("`or`", "keyword `or`")
                .as_str(),
        );
        assert_parse_err("not", 3, "expected an operand, found end of input");
        assert_parse_err("== 1", 0, "expected an operand, found `==`");
        assert_parse_err("a == not b", 5, "expected an operand, found keyword `not`");
        assert_parse_err("a in in b", 5, "expected an operand, found keyword `in`");
        assert_parse_err("()", 1, "expected an operand, found `)`");
        // Byte positions, not character positions.
        assert_parse_err("\"é\" ==", 7, "expected an operand, found end of input");
    }

    #[test]
    fn parse_error_trailing_input() {
        assert_parse_err("a == 1 foo", 7, "unexpected trailing input `foo`");
        assert_parse_err("a b c", 2, "unexpected trailing input `b c`");
        assert_parse_err(
            "exists(a) exists(b)",
            10,
            "unexpected trailing input `exists(b)`",
        );
        assert_parse_err("\"a\" \"b\"", 4, "unexpected trailing input `\"b\"`");
        assert_parse_err(
            "a == 1 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            7,
            "unexpected trailing input `bbbbbbbbbbbbbbbbbbbbbbbbbbbbb…`",
        );
        assert_eq!(
            parse_err("a == 1 foo").to_string(),
            "at column 8: unexpected trailing input `foo`"
        );
    }

    #[test]
    fn parse_error_chained_comparison() {
        let err = parse_err("a < b < c");
        assert_eq!(err.position, 6);
        assert!(
            err.message
                .starts_with("expected `and`, `or` or end of input, found `<`"),
            "{err}"
        );
        assert!(err.message.contains("cannot be chained"), "{err}");
        assert_eq!(parse_err("a == b contains c").position, 7);
        assert_eq!(parse_err("(a == b in c)").position, 8);
        // With parentheses it is fine.
        assert!(parse("(a < b) == (b < c)").is_ok());
    }

    #[test]
    fn parse_error_keyword_as_first_segment() {
        assert_parse_err(
            "in.x == 1",
            0,
            "keyword `in` cannot be the first segment of a path",
        );
        assert_parse_err(
            "a == and.b",
            5,
            "keyword `and` cannot be the first segment of a path",
        );
        assert_parse_err(
            "not.x",
            0,
            "keyword `not` cannot be the first segment of a path",
        );
        assert_parse_err(
            "true.x == 1",
            0,
            "keyword `true` cannot be the first segment of a path",
        );
        assert_parse_err(
            "exists.x",
            0,
            "keyword `exists` cannot be the first segment of a path",
        );
        assert_parse_err("and == 1", 0, "expected an operand, found keyword `and`");
        assert_parse_err(
            "contains",
            0,
            "expected an operand, found keyword `contains`",
        );
        assert_parse_err("exists(null)", 7, "expected a path, found keyword `null`");
        assert_parse_err("exists(in.x)", 7, "expected a path, found keyword `in`");
    }

    #[test]
    fn parse_error_empty_input() {
        assert_parse_err("", 0, "expected an operand, found end of input");
        assert_parse_err("   ", 3, "expected an operand, found end of input");
        assert_eq!(
            parse_err("").to_string(),
            "at column 1: expected an operand, found end of input"
        );
    }

    #[test]
    fn parse_error_unbalanced_parentheses() {
        assert_parse_err(
            "(a == 1",
            7,
            "expected `)` to close the `(` at column 1, found end of input",
        );
        assert_parse_err(
            "a and ((b)",
            10,
            "expected `)` to close the `(` at column 7, found end of input",
        );
        assert_parse_err(
            "(a b)",
            3,
            "expected `)` to close the `(` at column 1, found `b`",
        );
        assert_parse_err("a == 1)", 6, "unmatched `)`");
        assert_parse_err("(a))", 3, "unmatched `)`");
        assert_parse_err(
            "exists(a",
            8,
            "expected `)` after the path of `exists(`, found end of input",
        );
        assert_parse_err("exists a", 7, "expected `(` after `exists`, found `a`");
        assert_parse_err("exists(1)", 7, "expected a path, found `1`");
        assert_parse_err(
            "exists(a == 1)",
            9,
            "expected `)` after the path of `exists(`, found `==`",
        );
    }

    #[test]
    fn parse_errors_in_paths() {
        assert_parse_err(
            "a. == 1",
            2,
            "expected a path segment after `.`, found whitespace",
        );
        assert_parse_err(
            "a.",
            2,
            "expected a path segment after `.`, found end of input",
        );
        assert_parse_err(
            "a.\"b\"",
            2,
            "expected a path segment after `.`, found a string",
        );
        assert_parse_err("a .b", 2, "unexpected trailing input `.b`");
        assert_parse_err("a.01", 2, "array index `01` has a leading zero");
        assert_parse_err(
            "a.1x",
            2,
            "a path segment is an identifier or an array index, and an identifier cannot start with a digit",
        );
        assert_parse_err(
            "a.99999999999999999999999",
            2,
            "array index `99999999999999999999999` is too large",
        );
        assert_parse_err("a.-1", 2, "expected a path segment after `.`, found `-1`");
        assert!(parse_path(" a.b ").is_ok());
        assert_eq!(parse_path("a.b c").map_err(|e| e.position), Err(4));
        assert_eq!(
            parse_path("").map_err(|e| e.message),
            Err("expected a path, found end of input".to_owned())
        );
        assert_eq!(
            "x.y-z.0".parse::<Path>().map(|p| p.to_string()),
            Ok("x.y-z.0".to_owned())
        );
    }

    #[test]
    fn parse_errors_in_literals() {
        assert_parse_err(
            "a == 1.",
            7,
            "expected a digit after the decimal point, found end of input",
        );
        assert_parse_err(
            "a == 1.e5",
            7,
            "expected a digit after the decimal point, found `e5`",
        );
        assert_parse_err(
            "a == 1e",
            7,
            "expected a digit in the exponent, found end of input",
        );
        assert_parse_err(
            "a == -",
            6,
            "expected a digit after `-`, found end of input",
        );
        assert_parse_err(
            "a == - 1",
            6,
            "expected a digit after `-`, found whitespace",
        );
        assert_parse_err("a == 01", 5, "numbers cannot have leading zeros");
        assert_parse_err("a == 1e400", 5, "number `1e400` is out of range");
        assert_parse_err("a == 8and b", 6, "unexpected `a` after number");
        assert_parse_err("a == 1.5.2", 8, "unexpected `.` after number");
        assert_parse_err("a == \"\\x\"", 6, "invalid escape `\\x` in string");
        assert_parse_err(
            "a == \"\\u12\"",
            6,
            "invalid unicode escape: expected `\\u` followed by 4 hex digits",
        );
        assert_parse_err(
            "a == \"\\u+123\"",
            6,
            "invalid unicode escape: expected `\\u` followed by 4 hex digits",
        );
        assert!(
            parse_err("a == \"\\ud83d\"")
                .message
                .starts_with("unpaired surrogate `\\uD83D`")
        );
        assert_eq!(parse_err("a == \"\\ud83dx\"").position, 6);
        assert_eq!(
            parse_err("a == \"\\ude00\"").message,
            "unpaired surrogate `\\uDE00` in string"
        );
        assert!(
            parse_err("a == \"x\ny\"")
                .message
                .starts_with("control character U+000A in string")
        );
        assert_eq!(parse_err("a == \"x\ny\"").position, 7);
        assert_parse_err("a == [1,]", 8, "expected a JSON value, found `]`");
        assert_parse_err("a == [1 2]", 8, "expected `,` or `]` in array, found `2`");
        assert_parse_err(
            "a == [1",
            7,
            "expected `,` or `]` in array, found end of input",
        );
        assert_parse_err(
            "a == {\"a\" 1}",
            10,
            "expected `:` after object key, found `1`",
        );
        assert_parse_err(
            "a == {a: 1}",
            6,
            "expected a string key in object, found `a`",
        );
        assert_parse_err(
            "a == {\"a\": 1,}",
            13,
            "expected a string key in object, found `}`",
        );
        assert_parse_err(
            "a == {\"a\": 1 \"b\": 2}",
            13,
            "expected `,` or `}` in object, found a string",
        );
        assert_parse_err(
            "a == {\"a\": 1, \"a\": 2}",
            14,
            "duplicate key `a` in object",
        );
        assert_parse_err(
            "a == [b]",
            6,
            "expected a JSON value, found `b` (literals cannot contain paths)",
        );
        assert_parse_err(
            "a == 'x'",
            5,
            "expected an operand, found `'` (strings use double quotes)",
        );
    }

    #[test]
    fn parse_errors_for_foreign_operators() {
        assert_parse_err("a = 1", 2, "unexpected `=` (use `==` to compare)");
        assert_parse_err("a && b", 2, "unexpected `&` (use `and`)");
        assert_parse_err("a || b", 2, "unexpected `|` (use `or`)");
        assert_parse_err(
            "!a",
            0,
            "expected an operand, found `!` (use `!=` or `not`)",
        );
        assert_parse_err("a == #", 5, "expected an operand, found `#`");
        assert_parse_err("a == é", 5, "expected an operand, found `é`");
        assert_parse_err("AND == 1 AND b", 9, "unexpected trailing input `AND b`");
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}flag{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(parse(&ok).is_ok());
        let too_deep = format!(
            "{}flag{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_parse_err(
            &too_deep,
            MAX_NESTING,
            "nesting is too deep (more than 64 levels)",
        );
        let nots = format!("{}flag", "not ".repeat(10_000));
        assert!(parse_err(&nots).message.starts_with("nesting is too deep"));
        let arrays = format!("x == {}", "[".repeat(10_000));
        assert!(
            parse_err(&arrays)
                .message
                .starts_with("nesting is too deep")
        );
    }

    #[test]
    fn whitespace_is_flexible_between_tokens() {
        check("\tscore\n>=\r\n8  and\texists( name )", true);
        check("score>=8", true);
        check("not(off)", true);
        check("flag==true", true);
        check("name!=\"x\"and score<=9", true);
    }

    #[test]
    fn paths_are_listed_in_source_order() {
        let c = parse("a.b > 1 and exists(c.0.d) or e in [1] or not f.in == x").expect("parses");
        let paths: Vec<String> = c.paths().iter().map(|p| p.to_string()).collect();
        assert_eq!(paths, ["a.b", "c.0.d", "e", "f.in", "x"]);
        let roots: Vec<&str> = c.paths().iter().map(|p| p.root()).collect();
        assert_eq!(roots, ["a", "c", "e", "f", "x"]);
        assert_eq!(
            c.paths()[1].segments(),
            &[
                Segment::Key("c".into()),
                Segment::Index(0),
                Segment::Key("d".into())
            ]
        );
        assert!(parse("1 == 1").expect("parses").paths().is_empty());
        let repeated = parse("a == a").expect("parses");
        assert_eq!(repeated.paths().len(), 2);
    }

    #[test]
    fn explained_reasons() {
        let c = json!({"latest_upstream": {"output": {"score": 9, "notes": "good", "label": "9"}}});
        assert_eq!(
            reason("latest_upstream.output.score >= 8", &c),
            "latest_upstream.output.score (9) >= 8 is true"
        );
        assert_eq!(
            reason("8 > latest_upstream.output.score", &c),
            "8 > latest_upstream.output.score (9) is false"
        );
        assert_eq!(
            reason("latest_upstream.output.missing >= 8", &c),
            "latest_upstream.output.missing is missing"
        );
        assert_eq!(
            reason(
                "latest_upstream.output.score < 8 and exists(latest_upstream.output.notes)",
                &c
            ),
            "latest_upstream.output.score (9) < 8 is false"
        );
        assert_eq!(
            reason(
                "latest_upstream.output.score > 8 and exists(latest_upstream.output.notes)",
                &c
            ),
            "latest_upstream.output.score (9) > 8 is true and exists(latest_upstream.output.notes) is true"
        );
        assert_eq!(
            reason("exists(x) or latest_upstream.output.notes == \"bad\"", &c),
            "exists(x) is false and latest_upstream.output.notes (\"good\") == \"bad\" is false"
        );
        assert_eq!(
            reason(
                "exists(x) or latest_upstream.output.notes in [\"good\", \"fine\"]",
                &c
            ),
            "latest_upstream.output.notes (\"good\") in [\"good\", \"fine\"] is true"
        );
        assert_eq!(
            reason("not exists(x)", &c),
            "not exists(x) is true because exists(x) is false"
        );
        assert_eq!(
            reason("latest_upstream.output.label >= 8", &c),
            "latest_upstream.output.label (\"9\") >= 8 cannot be evaluated: type mismatch: `>=` cannot be applied to string and number"
        );
        assert_eq!(
            reason("latest_upstream.output.score", &c),
            "latest_upstream.output.score (9) is not a boolean"
        );
        assert_eq!(reason("\"yes\"", &c), "\"yes\" is not a boolean");
        assert_eq!(reason("true", &c), "true is true");
        assert_eq!(
            reason("(latest_upstream.output.score > 1) == false", &c),
            "(latest_upstream.output.score > 1) (true) == false is false"
        );
        assert_eq!(
            reason("latest_upstream.output == {}", &c),
            "latest_upstream.output ({\"label\":\"9\",\"notes\":\"good\",\"score\":9}) == {} is false"
        );
        let long = json!({"s": "x".repeat(200)});
        let r = reason("s == \"y\"", &long);
        assert!(r.starts_with("s (\"xxxx"), "{r}");
        assert!(r.ends_with("…) == \"y\" is false"), "{r}");
        assert!(r.chars().count() < 110, "{r}");
    }

    #[test]
    fn explained_outcome_matches_evaluate() {
        let c = ctx();
        for source in [
            "score >= 8",
            "nope > 1",
            "score",
            "name < 1",
            "exists(nope) and nope",
            "flag or nope",
            "not (score == 9 or off)",
        ] {
            let condition = parse(source).expect("parses");
            let explained = condition.evaluate_explained(&c);
            assert_eq!(explained.outcome, condition.evaluate(&c), "{source}");
            assert!(!explained.reason.is_empty(), "{source}");
        }
    }

    #[test]
    fn eval_error_display() {
        assert_eq!(
            EvalError::MissingPath { path: "a.b".into() }.to_string(),
            "path `a.b` is missing"
        );
        assert_eq!(
            EvalError::TypeMismatch {
                operator: "<".into(),
                left: "string".into(),
                right: "number".into()
            }
            .to_string(),
            "type mismatch: `<` cannot be applied to string and number"
        );
        assert_eq!(
            EvalError::NotBoolean {
                found: "null".into()
            }
            .to_string(),
            "expected a boolean, found null"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(EvalError::NotBoolean {
            found: "null".into(),
        });
        assert!(boxed.to_string().contains("null"));
    }

    #[test]
    fn serde_round_trip_as_a_string() {
        let c = parse("latest_upstream.output.score >= 8").expect("parses");
        let text = serde_json::to_string(&c).expect("serializes");
        assert_eq!(text, "\"latest_upstream.output.score >= 8\"");
        let back: Condition = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, c);
        assert_eq!(back.source(), "latest_upstream.output.score >= 8");
        assert_eq!(back.to_string(), c.source());

        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Rule {
            connector: String,
            when: Condition,
        }
        let rule: Rule =
            serde_json::from_value(json!({"connector": "approve", "when": "score > 1"}))
                .expect("deserializes");
        assert_eq!(rule.when.evaluate(&ctx()), Ok(true));
        assert_eq!(
            serde_json::to_value(&rule).expect("serializes")["when"],
            json!("score > 1")
        );

        let err = serde_json::from_str::<Condition>("\"a ==\"").expect_err("must fail");
        assert!(
            err.to_string()
                .contains("invalid condition `a ==`: at column 5: expected an operand"),
            "{err}"
        );
        assert!(serde_json::from_str::<Condition>("5").is_err());
        assert_eq!("score > 1".parse::<Condition>(), parse("score > 1"));
    }

    fn review_context(review_output: Value) -> Value {
        json!({
            "inputs": { "topic": "event sourcing" },
            "upstream": {
                "review": { "output": review_output.clone(), "node_run_id": "nr-7", "status": "succeeded" }
            },
            "latest_upstream": { "node_id": "review", "output": review_output, "node_run_id": "nr-7" },
            "context": {},
            "run": { "id": "run-1", "flowchart": "review-loop", "version": 1 },
            "node": { "id": "gate", "type": "decision", "execution_index": 2 }
        })
    }

    #[test]
    fn flowchart_format_example_conditions() {
        let approve = parse("latest_upstream.output.score >= 8").expect("parses");
        let revise =
            parse("latest_upstream.output.score < 8 and exists(latest_upstream.output.notes)")
                .expect("parses");
        let paths: Vec<String> = revise.paths().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "latest_upstream.output.score",
                "latest_upstream.output.notes"
            ]
        );

        let good = review_context(json!({ "score": 9, "notes": "good" }));
        assert_eq!(approve.evaluate(&good), Ok(true));
        assert_eq!(revise.evaluate(&good), Ok(false));
        assert_eq!(
            approve.evaluate_explained(&good).reason,
            "latest_upstream.output.score (9) >= 8 is true"
        );

        let short = review_context(json!({ "score": 5, "notes": "too short" }));
        assert_eq!(approve.evaluate(&short), Ok(false));
        assert_eq!(revise.evaluate(&short), Ok(true));
        assert_eq!(
            revise.evaluate_explained(&short).reason,
            "latest_upstream.output.score (5) < 8 is true and exists(latest_upstream.output.notes) is true"
        );

        let no_notes = review_context(json!({ "score": 5 }));
        assert_eq!(revise.evaluate(&no_notes), Ok(false));

        let no_score = review_context(json!({ "notes": "?" }));
        assert_eq!(
            approve.evaluate(&no_score),
            missing("latest_upstream.output.score")
        );
        let explained = revise.evaluate_explained(&no_score);
        assert_eq!(explained.outcome, missing("latest_upstream.output.score"));
        assert_eq!(explained.reason, "latest_upstream.output.score is missing");

        let string_score = review_context(json!({ "score": "9", "notes": "good" }));
        assert_eq!(
            approve.evaluate(&string_score),
            mismatch(">=", "string", "number")
        );
    }
}
