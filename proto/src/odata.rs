//! Batch's OData `$filter` subset: a lexer and recursive-descent parser into a typed tree
//! ([`Expr`]), checked against the properties a list documents ([`Schema`]), and evaluated
//! over an entity's JSON. Pure: no I/O.
//!
//! Grammar (keywords and operators in any case, as Batch accepts them):
//!
//! ```text
//! expr    := and ('or' and)*
//! and     := unary ('and' unary)*
//! unary   := 'not' unary | primary
//! primary := '(' expr ')'
//!          | 'startswith' '(' path ',' string ')'
//!          | operand ('eq'|'ne'|'gt'|'ge'|'lt'|'le') operand
//!          | path                       -- a boolean property alone
//! operand := path | string | integer | datetime | 'true' | 'false' | 'null'
//! path    := name ('/' name)*           -- e.g. executionInfo/exitCode
//! string  := "'" ( char | "''" )* "'"
//! datetime:= "datetime'" iso-8601 "'" | iso-8601 (unquoted, e.g. 2024-05-01T00:00:00Z)
//! ```
//!
//! Errors name the position (a 0-based character offset) and what was expected.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;

/// Nesting deeper than this is refused, so that a hostile filter cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// At most this many conditions: a long `a and b and ...` chain is a deep tree too, which
/// evaluating (and dropping) walks recursively.
pub const MAX_CONDITIONS: usize = 256;

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
    StartsWith(Path, String),
    /// A boolean property standing alone (`isDedicated`).
    Prop(Path),
}

/// A property path, e.g. `["executionInfo", "exitCode"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Prop(Path),
    Lit(Literal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    DateTime(DateTime<Utc>),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn from_word(w: &str) -> Option<CmpOp> {
        Some(match w.to_ascii_lowercase().as_str() {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
        }
    }

    /// Whether `ord` (left compared with right) satisfies the operator.
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
        }
    }
}

/// Why a `$filter` was refused: where (a character offset, when the syntax is at fault)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub position: Option<usize>,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "$filter: at position {p}: {}", self.message),
            None => write!(f, "$filter: {}", self.message),
        }
    }
}

impl std::error::Error for FilterError {}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A name or a path (`state`, `executionInfo/exitCode`), also keywords.
    Word(String),
    Str(String),
    Int(i64),
    DateTime(DateTime<Utc>),
    LParen,
    RParen,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("the string '{}'", s.replace('\'', "''")),
            Tok::Int(i) => format!("the number {i}"),
            Tok::DateTime(d) => format!("the datetime {}", d.to_rfc3339()),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "the end of the filter".into(),
        }
    }
}

fn err(pos: usize, message: impl Into<String>) -> FilterError {
    FilterError {
        position: Some(pos),
        message: message.into(),
    }
}

/// Parses an ISO 8601 datetime: RFC 3339, or without a zone (then UTC).
fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    // A quoted string starting at `open` (the quote); returns its text and the next index.
    let quoted = |open: usize| -> Result<(String, usize), FilterError> {
        let mut s = String::new();
        let mut j = open + 1;
        loop {
            match chars.get(j) {
                None => return Err(err(open, "a string that is never closed (expected ')")),
                Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                    s.push('\'');
                    j += 2;
                }
                Some('\'') => return Ok((s, j + 1)),
                Some(c) => {
                    s.push(*c);
                    j += 1;
                }
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            ',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            '\'' => {
                let (s, next) = quoted(i)?;
                out.push((start, Tok::Str(s)));
                i = next;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric()
                        || matches!(chars[j], ':' | '.' | '-' | '+'))
                {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let tok = if let Ok(n) = text.parse::<i64>() {
                    Tok::Int(n)
                } else if let Some(d) = parse_datetime(&text) {
                    Tok::DateTime(d)
                } else {
                    return Err(err(
                        start,
                        format!("'{text}' is neither an integer nor an ISO 8601 datetime"),
                    ));
                };
                out.push((start, tok));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '_' | '/'))
                {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                if word.eq_ignore_ascii_case("datetime") && chars.get(j) == Some(&'\'') {
                    let (s, next) = quoted(j)?;
                    let d = parse_datetime(&s).ok_or_else(|| {
                        err(
                            start,
                            format!("datetime'{s}' is not an ISO 8601 datetime (e.g. datetime'2024-05-01T00:00:00Z')"),
                        )
                    })?;
                    out.push((start, Tok::DateTime(d)));
                    i = next;
                    continue;
                }
                if word.ends_with('/') || word.contains("//") {
                    return Err(err(start, format!("'{word}' is not a property path")));
                }
                out.push((start, Tok::Word(word)));
                i = j;
            }
            c => return Err(err(start, format!("unexpected character '{c}'"))),
        }
    }
    out.push((chars.len(), Tok::End));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
    conditions: usize,
}

fn is_keyword(w: &str, k: &str) -> bool {
    w.eq_ignore_ascii_case(k)
}

impl Parser {
    fn peek(&self) -> &(usize, Tok) {
        // `End` is always last and never consumed.
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> (usize, Tok) {
        let t = self.peek().clone();
        if t.1 != Tok::End {
            self.at += 1;
        }
        t
    }

    fn expected(&self, what: &str) -> FilterError {
        let (pos, t) = self.peek();
        err(*pos, format!("expected {what}, found {}", t.describe()))
    }

    fn peek_keyword(&self, k: &str) -> bool {
        matches!(&self.peek().1, Tok::Word(w) if is_keyword(w, k))
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek().1 == t {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                self.peek().0,
                format!("the filter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        self.enter()?;
        let mut e = self.and()?;
        while self.peek_keyword("or") {
            self.bump();
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.unary()?;
        while self.peek_keyword("and") {
            self.bump();
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_keyword("not") {
            self.bump();
            self.enter()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(err(
                self.peek().0,
                format!("the filter has more than {MAX_CONDITIONS} conditions"),
            ));
        }
        if self.peek().1 == Tok::LParen {
            self.bump();
            let e = self.or()?;
            self.expect(Tok::RParen, "')' or a logical operator (and, or)")?;
            return Ok(e);
        }
        if self.peek_keyword("startswith")
            && self.toks.get(self.at + 1).map(|t| &t.1) == Some(&Tok::LParen)
        {
            self.bump();
            self.bump();
            let path = match self.bump() {
                (_, Tok::Word(w)) if !is_literal_word(&w) => path_of(&w),
                (pos, t) => {
                    return Err(err(
                        pos,
                        format!("expected a property for startswith, found {}", t.describe()),
                    ))
                }
            };
            self.expect(Tok::Comma, "','")?;
            let prefix = match self.bump() {
                (_, Tok::Str(s)) => s,
                (pos, t) => {
                    return Err(err(
                        pos,
                        format!(
                            "expected a string (in single quotes) for startswith, found {}",
                            t.describe()
                        ),
                    ))
                }
            };
            self.expect(Tok::RParen, "')'")?;
            return Ok(Expr::StartsWith(path, prefix));
        }
        let left = self.operand()?;
        let op = match &self.peek().1 {
            Tok::Word(w) => CmpOp::from_word(w),
            _ => None,
        };
        let Some(op) = op else {
            // A property alone is a boolean test; anything else needs an operator.
            if let Operand::Prop(p) = left {
                if matches!(self.peek().1, Tok::End | Tok::RParen)
                    || self.peek_keyword("and")
                    || self.peek_keyword("or")
                {
                    return Ok(Expr::Prop(p));
                }
            }
            return Err(self.expected("a comparison operator (eq, ne, gt, ge, lt, le)"));
        };
        self.bump();
        let right = self.operand()?;
        Ok(Expr::Cmp(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let what = "a property or a value (a 'string', a number, datetime'...', true, false)";
        let o = match &self.peek().1 {
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "true" => Operand::Lit(Literal::Bool(true)),
                "false" => Operand::Lit(Literal::Bool(false)),
                "null" => Operand::Lit(Literal::Null),
                "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" => {
                    return Err(self.expected(what))
                }
                _ => Operand::Prop(path_of(w)),
            },
            Tok::Str(s) => Operand::Lit(Literal::Str(s.clone())),
            Tok::Int(i) => Operand::Lit(Literal::Int(*i)),
            Tok::DateTime(d) => Operand::Lit(Literal::DateTime(*d)),
            _ => return Err(self.expected(what)),
        };
        self.bump();
        Ok(o)
    }
}

fn is_literal_word(w: &str) -> bool {
    ["true", "false", "null"].iter().any(|k| is_keyword(w, k))
}

fn path_of(w: &str) -> Path {
    Path(w.split('/').map(str::to_string).collect())
}

/// Parses `src` into a tree; the syntax alone (see [`Schema::check`] for the properties).
pub fn parse(src: &str) -> Result<Expr, FilterError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
        conditions: 0,
    };
    if p.peek().1 == Tok::End {
        return Err(p.expected("a filter expression"));
    }
    let e = p.or()?;
    if p.peek().1 != Tok::End {
        return Err(p.expected("a logical operator (and, or) or the end of the filter"));
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------
// Printing: the canonical form, parsed back to the same tree.

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::DateTime(d) => write!(
                f,
                "datetime'{}'",
                d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Prop(p) => write!(f, "{p}"),
            Operand::Lit(l) => write!(f, "{l}"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Not(a) => write!(f, "not {a}"),
            Expr::Cmp(a, op, b) => write!(f, "{a} {} {b}", op.as_str()),
            Expr::StartsWith(p, s) => {
                write!(f, "startswith({p}, {})", Literal::Str(s.clone()))
            }
            Expr::Prop(p) => write!(f, "{p}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schemas: what each list lets a filter name.

/// The type of a filterable property, which decides how it compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Compared as written.
    Str,
    /// An id: Batch ids are case-insensitive.
    Id,
    /// One of these values (compared without regard to case); any other is refused.
    Enum(&'static [&'static str]),
    Int,
    DateTime,
    Bool,
}

/// A list's filterable properties: `(path, kind)`, paths as Batch names them.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// What the list holds, for messages ("jobs").
    pub entity: &'static str,
    pub props: &'static [(&'static str, Kind)],
}

const JOB_STATES: &[&str] = &[
    "active",
    "disabling",
    "disabled",
    "enabling",
    "terminating",
    "completed",
    "deleting",
];
const TASK_STATES: &[&str] = &["active", "preparing", "running", "completed"];
const SCHEDULE_STATES: &[&str] = &["active", "completed", "disabled", "terminating", "deleting"];
const TASK_RESULTS: &[&str] = &["success", "failure"];
const FAILURE_CATEGORIES: &[&str] = &["usererror", "servererror"];

/// `GET /jobs` (and a job schedule's jobs): Batch's documented job filters.
pub const JOBS: Schema = Schema {
    entity: "jobs",
    props: &[
        ("id", Kind::Id),
        ("displayName", Kind::Str),
        ("state", Kind::Enum(JOB_STATES)),
        ("previousState", Kind::Enum(JOB_STATES)),
        ("creationTime", Kind::DateTime),
        ("stateTransitionTime", Kind::DateTime),
        ("previousStateTransitionTime", Kind::DateTime),
        ("lastModified", Kind::DateTime),
        ("eTag", Kind::Str),
        ("priority", Kind::Int),
        ("maxParallelTasks", Kind::Int),
        ("usesTaskDependencies", Kind::Bool),
        ("executionInfo/startTime", Kind::DateTime),
        ("executionInfo/endTime", Kind::DateTime),
        ("executionInfo/poolId", Kind::Id),
        ("executionInfo/terminateReason", Kind::Str),
        ("executionInfo/schedulingError/code", Kind::Str),
        (
            "executionInfo/schedulingError/category",
            Kind::Enum(FAILURE_CATEGORIES),
        ),
        ("poolInfo/poolId", Kind::Id),
    ],
};

/// `GET /jobs/{job}/tasks`: Batch's documented task filters.
pub const TASKS: Schema = Schema {
    entity: "tasks",
    props: &[
        ("id", Kind::Id),
        ("displayName", Kind::Str),
        ("commandLine", Kind::Str),
        ("state", Kind::Enum(TASK_STATES)),
        ("previousState", Kind::Enum(TASK_STATES)),
        ("creationTime", Kind::DateTime),
        ("stateTransitionTime", Kind::DateTime),
        ("previousStateTransitionTime", Kind::DateTime),
        ("lastModified", Kind::DateTime),
        ("eTag", Kind::Str),
        ("requiredSlots", Kind::Int),
        ("executionInfo/exitCode", Kind::Int),
        ("executionInfo/startTime", Kind::DateTime),
        ("executionInfo/endTime", Kind::DateTime),
        ("executionInfo/result", Kind::Enum(TASK_RESULTS)),
        ("executionInfo/retryCount", Kind::Int),
        ("executionInfo/requeueCount", Kind::Int),
        ("executionInfo/lastRetryTime", Kind::DateTime),
        ("executionInfo/lastRequeueTime", Kind::DateTime),
        ("executionInfo/failureInfo/code", Kind::Str),
        (
            "executionInfo/failureInfo/category",
            Kind::Enum(FAILURE_CATEGORIES),
        ),
        ("nodeInfo/nodeId", Kind::Id),
        ("nodeInfo/poolId", Kind::Id),
    ],
};

/// `GET /jobschedules`: Batch's documented job schedule filters.
pub const JOB_SCHEDULES: Schema = Schema {
    entity: "job schedules",
    props: &[
        ("id", Kind::Id),
        ("displayName", Kind::Str),
        ("state", Kind::Enum(SCHEDULE_STATES)),
        ("previousState", Kind::Enum(SCHEDULE_STATES)),
        ("creationTime", Kind::DateTime),
        ("stateTransitionTime", Kind::DateTime),
        ("previousStateTransitionTime", Kind::DateTime),
        ("lastModified", Kind::DateTime),
        ("eTag", Kind::Str),
        ("executionInfo/nextRunTime", Kind::DateTime),
        ("executionInfo/endTime", Kind::DateTime),
        ("executionInfo/recentJob/id", Kind::Id),
        ("schedule/doNotRunUntil", Kind::DateTime),
        ("schedule/doNotRunAfter", Kind::DateTime),
    ],
};

/// `GET .../tasks/{task}/files`: a task's files.
pub const FILES: Schema = Schema {
    entity: "files",
    props: &[
        ("name", Kind::Str),
        ("url", Kind::Str),
        ("isDirectory", Kind::Bool),
        ("properties/contentLength", Kind::Int),
        ("properties/lastModified", Kind::DateTime),
        ("properties/creationTime", Kind::DateTime),
    ],
};

const POOL_STATES: &[&str] = &["active", "deleting"];
const ALLOCATION_STATES: &[&str] = &["steady", "resizing", "stopping"];
const NODE_STATES: &[&str] = &[
    "idle",
    "rebooting",
    "reimaging",
    "running",
    "unusable",
    "creating",
    "starting",
    "waitingforstarttask",
    "starttaskfailed",
    "unknown",
    "leavingpool",
    "offline",
    "preempted",
    "upgradingos",
    "deallocated",
    "deallocating",
];

/// `GET /pools`: Batch's documented pool filters that berth's pools have.
pub const POOLS: Schema = Schema {
    entity: "pools",
    props: &[
        ("id", Kind::Id),
        ("displayName", Kind::Str),
        ("state", Kind::Enum(POOL_STATES)),
        ("allocationState", Kind::Enum(ALLOCATION_STATES)),
        ("creationTime", Kind::DateTime),
        ("stateTransitionTime", Kind::DateTime),
        ("lastModified", Kind::DateTime),
        ("eTag", Kind::Str),
        ("vmSize", Kind::Str),
        ("taskSlotsPerNode", Kind::Int),
        ("currentDedicatedNodes", Kind::Int),
        ("currentLowPriorityNodes", Kind::Int),
    ],
};

/// `GET /pools/{pool}/nodes`: Batch's documented node filters.
pub const NODES: Schema = Schema {
    entity: "nodes",
    props: &[
        ("id", Kind::Id),
        ("state", Kind::Enum(NODE_STATES)),
        ("schedulingState", Kind::Enum(&["enabled", "disabled"])),
        ("isDedicated", Kind::Bool),
        ("stateTransitionTime", Kind::DateTime),
        ("lastBootTime", Kind::DateTime),
        ("allocationTime", Kind::DateTime),
        ("runningTasksCount", Kind::Int),
        ("runningTaskSlotsCount", Kind::Int),
    ],
};

const JOB_TASK_STATES: &[&str] = &["running", "completed"];

/// `GET /jobs/{job}/jobpreparationandreleasetaskstatus`: one entry a node.
pub const PREP_RELEASE: Schema = Schema {
    entity: "preparation and release task statuses",
    props: &[
        ("poolId", Kind::Id),
        ("nodeId", Kind::Id),
        (
            "jobPreparationTaskExecutionInfo/state",
            Kind::Enum(JOB_TASK_STATES),
        ),
        ("jobPreparationTaskExecutionInfo/exitCode", Kind::Int),
        (
            "jobPreparationTaskExecutionInfo/result",
            Kind::Enum(TASK_RESULTS),
        ),
        (
            "jobReleaseTaskExecutionInfo/state",
            Kind::Enum(JOB_TASK_STATES),
        ),
        ("jobReleaseTaskExecutionInfo/exitCode", Kind::Int),
    ],
};

/// A filter checked against a schema: every property known, every value of its type.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
    schema: Schema,
}

impl Schema {
    /// The kind of `p`, or an error naming it and the properties this list filters on.
    /// Names match without regard to case, as Batch's do.
    fn kind(&self, p: &Path) -> Result<Kind, FilterError> {
        let name = p.to_string();
        self.props
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, k)| *k)
            .ok_or_else(|| FilterError {
                position: None,
                message: format!(
                    "unknown property '{name}' for {}; these can be filtered on: {}",
                    self.entity,
                    self.props
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Parses `src` and checks it against this schema.
    pub fn parse(&self, src: &str) -> Result<Filter, FilterError> {
        let expr = parse(src)?;
        self.check(&expr)?;
        Ok(Filter {
            expr,
            schema: *self,
        })
    }

    /// Every property of `e` is this list's, and compared with a value of its type.
    pub fn check(&self, e: &Expr) -> Result<(), FilterError> {
        let bad = |m: String| FilterError {
            position: None,
            message: m,
        };
        match e {
            Expr::Or(a, b) | Expr::And(a, b) => {
                self.check(a)?;
                self.check(b)
            }
            Expr::Not(a) => self.check(a),
            Expr::Prop(p) => match self.kind(p)? {
                Kind::Bool => Ok(()),
                _ => Err(bad(format!(
                    "'{p}' is not a boolean; compare it with eq, ne, gt, ge, lt or le"
                ))),
            },
            Expr::StartsWith(p, _) => match self.kind(p)? {
                Kind::Str | Kind::Id | Kind::Enum(_) => Ok(()),
                _ => Err(bad(format!(
                    "startswith takes a string property; '{p}' is not one"
                ))),
            },
            Expr::Cmp(a, op, b) => {
                let (p, lit) = match (a, b) {
                    (Operand::Prop(p), Operand::Lit(l)) | (Operand::Lit(l), Operand::Prop(p)) => {
                        (p, l)
                    }
                    (Operand::Prop(p), Operand::Prop(q)) => {
                        let (kp, kq) = (self.kind(p)?, self.kind(q)?);
                        return if same_type(kp, kq) {
                            Ok(())
                        } else {
                            Err(bad(format!("'{p}' and '{q}' are of different types")))
                        };
                    }
                    (Operand::Lit(x), Operand::Lit(y)) => {
                        return Err(bad(format!(
                            "'{x} {} {y}' compares two values; one side must be a property",
                            op.as_str()
                        )))
                    }
                };
                let k = self.kind(p)?;
                check_literal(p, k, lit).map_err(bad)
            }
        }
    }
}

fn same_type(a: Kind, b: Kind) -> bool {
    use Kind::*;
    matches!(
        (a, b),
        (Str | Id | Enum(_), Str | Id | Enum(_)) | (Int, Int) | (DateTime, DateTime) | (Bool, Bool)
    )
}

fn check_literal(p: &Path, k: Kind, lit: &Literal) -> Result<(), String> {
    match (k, lit) {
        (_, Literal::Null) => Ok(()),
        (Kind::Str | Kind::Id, Literal::Str(_)) | (Kind::Int, Literal::Int(_)) => Ok(()),
        (Kind::Bool, Literal::Bool(_)) | (Kind::DateTime, Literal::DateTime(_)) => Ok(()),
        // A quoted ISO datetime is accepted for a datetime property.
        (Kind::DateTime, Literal::Str(s)) if parse_datetime(s).is_some() => Ok(()),
        (Kind::Enum(values), Literal::Str(s)) => {
            if values.iter().any(|v| v.eq_ignore_ascii_case(s)) {
                Ok(())
            } else {
                Err(format!(
                    "'{s}' is not a value of '{p}'; it is one of {}",
                    values.join(", ")
                ))
            }
        }
        (k, l) => Err(format!(
            "'{p}' is {}, and cannot be compared with {l}",
            match k {
                Kind::Str | Kind::Id | Kind::Enum(_) => "a string ('...')",
                Kind::Int => "an integer",
                Kind::DateTime => "a datetime (datetime'2024-05-01T00:00:00Z')",
                Kind::Bool => "a boolean (true or false)",
            }
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation over the entity's JSON (as the API answers it).

/// A property's value in `entity`, or `None` (absent, or JSON null).
fn lookup<'a>(entity: &'a Value, p: &Path) -> Option<&'a Value> {
    let mut v = entity;
    for seg in &p.0 {
        let obj = v.as_object()?;
        // Property names match without regard to case.
        v = obj.get(seg.as_str()).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(seg))
                .map(|(_, v)| v)
        })?;
    }
    (!v.is_null()).then_some(v)
}

/// A comparable value: what a property or a literal stands for.
#[derive(Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Time(DateTime<Utc>),
    Bool(bool),
}

fn json_val(v: &Value, k: Kind) -> Option<Val> {
    match k {
        Kind::Int => v.as_i64().map(Val::Int),
        Kind::Bool => v.as_bool().map(Val::Bool),
        Kind::DateTime => v.as_str().and_then(parse_datetime).map(Val::Time),
        Kind::Str => v.as_str().map(|s| Val::Str(s.to_string())),
        Kind::Id | Kind::Enum(_) => v.as_str().map(|s| Val::Str(s.to_ascii_lowercase())),
    }
}

fn lit_val(l: &Literal, k: Kind) -> Option<Val> {
    match (l, k) {
        (Literal::Null, _) => None,
        (Literal::Str(s), Kind::DateTime) => parse_datetime(s).map(Val::Time),
        (Literal::Str(s), Kind::Id | Kind::Enum(_)) => Some(Val::Str(s.to_ascii_lowercase())),
        (Literal::Str(s), _) => Some(Val::Str(s.clone())),
        (Literal::Int(i), _) => Some(Val::Int(*i)),
        (Literal::DateTime(d), _) => Some(Val::Time(*d)),
        (Literal::Bool(b), _) => Some(Val::Bool(*b)),
    }
}

fn order(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Filter {
    /// The checked tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The value `prop` must equal for any item to pass (the filter is `prop eq 'v'`, or
    /// an `and` holding it), lower-cased for ids and enums as they compare: a store can
    /// read only those items and still apply [`Filter::matches`] to them. `None`: no such
    /// condition.
    pub fn required_eq(&self, prop: &str) -> Option<String> {
        fn find(e: &Expr, prop: &str) -> Option<String> {
            match e {
                Expr::And(a, b) => find(a, prop).or_else(|| find(b, prop)),
                Expr::Cmp(Operand::Prop(p), CmpOp::Eq, Operand::Lit(Literal::Str(v)))
                | Expr::Cmp(Operand::Lit(Literal::Str(v)), CmpOp::Eq, Operand::Prop(p))
                    if p.to_string().eq_ignore_ascii_case(prop) =>
                {
                    Some(v.clone())
                }
                _ => None,
            }
        }
        let v = find(&self.expr, prop)?;
        match self.schema.kind(&Path(vec![prop.to_string()])) {
            Ok(Kind::Id | Kind::Enum(_)) => Some(v.to_ascii_lowercase()),
            _ => Some(v),
        }
    }

    /// Whether `entity` (the API's JSON of one item) passes the filter.
    pub fn matches(&self, entity: &Value) -> bool {
        self.eval(&self.expr, entity)
    }

    fn kind(&self, p: &Path) -> Kind {
        // Checked when parsed; a string compare is the harmless fallback.
        self.schema.kind(p).unwrap_or(Kind::Str)
    }

    fn operand(&self, o: &Operand, k: Kind, entity: &Value) -> Option<Val> {
        match o {
            Operand::Prop(p) => lookup(entity, p).and_then(|v| json_val(v, k)),
            Operand::Lit(l) => lit_val(l, k),
        }
    }

    fn eval(&self, e: &Expr, entity: &Value) -> bool {
        match e {
            Expr::Or(a, b) => self.eval(a, entity) || self.eval(b, entity),
            Expr::And(a, b) => self.eval(a, entity) && self.eval(b, entity),
            Expr::Not(a) => !self.eval(a, entity),
            Expr::Prop(p) => lookup(entity, p).and_then(Value::as_bool) == Some(true),
            Expr::StartsWith(p, prefix) => {
                let k = self.kind(p);
                match (
                    json_val(lookup(entity, p).unwrap_or(&Value::Null), k),
                    lit_val(&Literal::Str(prefix.clone()), k),
                ) {
                    (Some(Val::Str(v)), Some(Val::Str(pre))) => v.starts_with(&pre),
                    _ => false,
                }
            }
            Expr::Cmp(a, op, b) => {
                let k = match (a, b) {
                    (Operand::Prop(p), _) | (_, Operand::Prop(p)) => self.kind(p),
                    _ => Kind::Str,
                };
                // OData's null: equal only to null; never ordered.
                match (self.operand(a, k, entity), self.operand(b, k, entity)) {
                    (Some(x), Some(y)) => order(&x, &y).is_some_and(|o| op.holds(o)),
                    (None, None) => matches!(op, CmpOp::Eq | CmpOp::Ge | CmpOp::Le),
                    _ => *op == CmpOp::Ne,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn task(state: &str, exit: Option<i64>, created: &str) -> Value {
        let mut t = json!({"id": "Task-7", "state": state, "creationTime": created});
        if let Some(c) = exit {
            t["executionInfo"] =
                json!({"exitCode": c, "result": if c == 0 {"success"} else {"failure"}});
        }
        t
    }

    fn matches(schema: Schema, f: &str, e: &Value) -> bool {
        schema
            .parse(f)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .matches(e)
    }

    #[test]
    fn required_eq_finds_a_conjunct_only() {
        let req = |f: &str| TASKS.parse(f).unwrap().required_eq("state");
        assert_eq!(req("state eq 'Active'").as_deref(), Some("active"));
        assert_eq!(req("'running' eq state").as_deref(), Some("running"));
        assert_eq!(
            req("id gt 'a' and (state eq 'completed' and requiredSlots eq 1)").as_deref(),
            Some("completed")
        );
        assert_eq!(req("state eq 'active' or id eq 'x'"), None);
        assert_eq!(req("not state eq 'active'"), None);
        assert_eq!(req("state ne 'active'"), None);
        assert_eq!(req("previousState eq 'active'"), None);
    }

    #[test]
    fn parses_precedence_and_parentheses() {
        let e = parse("state eq 'a' or id eq 'b' and not priority gt 3").unwrap();
        assert_eq!(
            e.to_string(),
            "(state eq 'a' or (id eq 'b' and not priority gt 3))"
        );
        let e = parse("(state eq 'a' or id eq 'b') and priority ge -2").unwrap();
        assert_eq!(
            e.to_string(),
            "((state eq 'a' or id eq 'b') and priority ge -2)"
        );
        // Operators and keywords in any case.
        assert_eq!(
            parse("State EQ 'x' AND NOT Id Ne 'y'").unwrap().to_string(),
            "(State eq 'x' and not Id ne 'y')"
        );
    }

    #[test]
    fn parses_literals() {
        let cases = [
            ("id eq 'it''s'", Literal::Str("it's".into())),
            ("executionInfo/exitCode eq -1", Literal::Int(-1)),
            (
                "creationTime gt datetime'2024-05-01T10:00:00Z'",
                Literal::DateTime("2024-05-01T10:00:00Z".parse().unwrap()),
            ),
            (
                "creationTime gt 2024-05-01T10:00:00+02:00",
                Literal::DateTime("2024-05-01T08:00:00Z".parse().unwrap()),
            ),
            (
                "creationTime gt datetime'2024-05-01T10:00:00'",
                Literal::DateTime("2024-05-01T10:00:00Z".parse().unwrap()),
            ),
            ("usesTaskDependencies eq true", Literal::Bool(true)),
            ("executionInfo/endTime eq null", Literal::Null),
        ];
        for (src, lit) in cases {
            match parse(src) {
                Ok(Expr::Cmp(Operand::Prop(_), _, Operand::Lit(l))) => assert_eq!(l, lit, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
        assert_eq!(
            parse("startswith(id, 'job-')").unwrap(),
            Expr::StartsWith(Path(vec!["id".into()]), "job-".into())
        );
    }

    #[test]
    fn syntax_errors_name_the_position_and_what_was_expected() {
        let cases = [
            (
                "",
                0,
                "expected a filter expression, found the end of the filter",
            ),
            ("state", 5, ""), // a lone non-boolean property is refused by the schema, not here
            ("state eq", 8, "expected a property or a value"),
            ("state = 'x'", 6, "unexpected character '='"),
            ("state eq 'x", 9, "never closed"),
            ("state eq 'x' and", 16, "expected a property or a value"),
            ("(state eq 'x'", 13, "expected ')' or a logical operator"),
            (
                "state eq 'x' id eq 'y'",
                13,
                "expected a logical operator (and, or) or the end",
            ),
            (
                "state foo 'x'",
                6,
                "expected a comparison operator (eq, ne, gt, ge, lt, le), found 'foo'",
            ),
            (
                "creationTime gt datetime'yesterday'",
                16,
                "is not an ISO 8601 datetime",
            ),
            ("startswith(id 'x')", 14, "expected ','"),
            ("startswith(id, 3)", 15, "expected a string"),
            (
                "priority eq 12abc",
                12,
                "neither an integer nor an ISO 8601 datetime",
            ),
        ];
        for (src, pos, msg) in cases {
            match parse(src) {
                Ok(_) if msg.is_empty() => {}
                Ok(e) => panic!("{src}: parsed as {e}"),
                Err(e) => {
                    assert_eq!(e.position, Some(pos), "{src}: {e}");
                    assert!(e.message.contains(msg), "{src}: {e}");
                }
            }
        }
        let deep = format!("{}state eq 'a'{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("nests deeper"));
        let nots = format!("{}state eq 'a'", "not ".repeat(200));
        assert!(parse(&nots).unwrap_err().message.contains("nests deeper"));
        let chain = vec!["id eq 'a'"; 300].join(" and ");
        let e = parse(&chain).unwrap_err();
        assert!(e.message.contains("more than 256 conditions"), "{e}");
        assert!(parse(&vec!["id eq 'a'"; 200].join(" or ")).is_ok());
    }

    #[test]
    fn schemas_refuse_unknown_properties_and_wrong_types() {
        let cases = [
            (JOBS, "foo eq 'x'", "unknown property 'foo' for jobs; these can be filtered on: id,"),
            (TASKS, "executionInfo/exitcode eq 'x'", "'executionInfo/exitcode' is an integer"),
            (TASKS, "state eq 'done'", "'done' is not a value of 'state'; it is one of active, preparing, running, completed"),
            (JOBS, "creationTime gt 5", "is a datetime"),
            (JOBS, "priority eq 'high'", "is an integer"),
            (JOBS, "'a' eq 'a'", "one side must be a property"),
            (JOBS, "state", "is not a boolean"),
            (TASKS, "startswith(executionInfo/exitCode, '1')", "startswith takes a string property"),
            (JOB_SCHEDULES, "priority eq 1", "unknown property 'priority' for job schedules"),
        ];
        for (schema, src, msg) in cases {
            let e = schema.parse(src).unwrap_err();
            assert_eq!(e.position, None, "{src}");
            assert!(e.to_string().contains(msg), "{src}: {e}");
        }
    }

    #[test]
    fn evaluates_over_the_entitys_json() {
        let done = task("completed", Some(3), "2024-05-01T10:00:00Z");
        let ok = task("completed", Some(0), "2024-05-02T10:00:00Z");
        let running = task("running", None, "2024-05-03T10:00:00.5Z");
        let all = [&done, &ok, &running];
        let pick = |f: &str| -> Vec<usize> {
            all.iter()
                .enumerate()
                .filter(|(_, t)| matches(TASKS, f, t))
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(pick("state eq 'completed'"), [0, 1]);
        assert_eq!(
            pick("state eq 'Completed'"),
            [0, 1],
            "enum values ignore case"
        );
        assert_eq!(pick("state ne 'completed'"), [2]);
        assert_eq!(
            pick("executionInfo/exitCode ne 0"),
            [0, 2],
            "absent is not 0"
        );
        assert_eq!(
            pick("executionInfo/exitCode gt 0"),
            [0],
            "absent is never ordered"
        );
        assert_eq!(pick("executionInfo/exitCode eq null"), [2]);
        assert_eq!(pick("executionInfo/result eq 'failure'"), [0]);
        assert_eq!(
            pick("creationTime ge datetime'2024-05-02T10:00:00Z'"),
            [1, 2]
        );
        assert_eq!(pick("creationTime lt '2024-05-02T10:00:00Z'"), [0]);
        assert_eq!(
            pick("creationTime gt 2024-05-03T10:00:00Z"),
            [2],
            "sub-second times"
        );
        assert_eq!(pick("id eq 'task-7'"), [0, 1, 2], "ids ignore case");
        assert_eq!(pick("startswith(id, 'TASK-')"), [0, 1, 2]);
        assert_eq!(pick("startswith(commandLine, 'x')"), Vec::<usize>::new());
        assert_eq!(
            pick("not (state eq 'running') and (executionInfo/exitCode eq 0 or executionInfo/exitCode ge 3)"),
            [0, 1]
        );
        assert_eq!(
            pick("0 lt executionInfo/exitCode"),
            [0],
            "a literal on the left"
        );
        let j = json!({"id": "j", "usesTaskDependencies": true});
        assert!(matches(JOBS, "usesTaskDependencies", &j));
        assert!(!matches(JOBS, "not usesTaskDependencies", &j));
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            "[a-z' ]{0,6}".prop_map(Literal::Str),
            any::<i64>().prop_map(Literal::Int),
            (0i64..4_000_000_000)
                .prop_map(|s| Literal::DateTime(DateTime::from_timestamp(s, 0).unwrap())),
            any::<bool>().prop_map(Literal::Bool),
            Just(Literal::Null),
        ]
    }

    fn arb_path() -> impl Strategy<Value = Path> {
        proptest::collection::vec("[a-zA-Z_][a-zA-Z0-9_]{0,5}", 1..3)
            .prop_filter("not a keyword", |v| {
                !v.iter().any(|w| {
                    [
                        "and",
                        "or",
                        "not",
                        "eq",
                        "ne",
                        "gt",
                        "ge",
                        "lt",
                        "le",
                        "true",
                        "false",
                        "null",
                        "datetime",
                        "startswith",
                    ]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
                })
            })
            .prop_map(Path)
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        let cmp = prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Gt),
            Just(CmpOp::Ge),
            Just(CmpOp::Lt),
            Just(CmpOp::Le)
        ];
        let leaf = prop_oneof![
            (arb_path(), cmp, arb_literal()).prop_map(|(p, o, l)| Expr::Cmp(
                Operand::Prop(p),
                o,
                Operand::Lit(l)
            )),
            (arb_path(), "[a-z']{0,4}").prop_map(|(p, s)| Expr::StartsWith(p, s)),
            arb_path().prop_map(Expr::Prop),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Expr::Not(Box::new(a))),
            ]
        })
    }

    proptest! {
        /// The printed form of any tree parses back to the same tree.
        #[test]
        fn round_trips(e in arb_expr()) {
            let text = e.to_string();
            prop_assert_eq!(parse(&text), Ok(e), "{}", text);
        }

        /// Any input either parses or names a position inside it; nothing panics.
        #[test]
        fn never_panics(src in "[ -~]{0,60}") {
            match TASKS.parse(&src) {
                Ok(f) => { f.matches(&task("running", Some(1), "2024-01-01T00:00:00Z")); }
                Err(e) => prop_assert!(e.position.is_none_or(|p| p <= src.chars().count())),
            }
        }

        /// Mutations of valid filters never panic either.
        #[test]
        fn near_misses_never_panic(e in arb_expr(), cut in 0usize..80, junk in "[()',/ a-z0-9-]{0,3}") {
            let mut text: Vec<char> = e.to_string().chars().collect();
            let at = cut.min(text.len());
            text.splice(at..at, junk.chars());
            let src: String = text.into_iter().collect();
            drop(JOBS.parse(&src));
        }
    }
}
