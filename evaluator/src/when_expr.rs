//! `when=` expressions: a step that runs only if its dependencies' results say so.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | compare
//! compare := operand ("==" | "!=") operand      (at least one side a reference)
//! operand := reference | 'single-quoted string'  (\' and \\ escape inside)
//! reference := steps.<id>.outputs.<key> | steps.<id>.status
//! ```
//!
//! Invariants: an expression is at most [`MAX_LEN`] bytes and nests at most [`MAX_DEPTH`]
//! levels (so parsing and evaluating are linear and never overflow the stack); it has at
//! least one reference. Which steps it may name (its transitive dependencies) is checked
//! with the templates' rules in [`crate::template::check`]. Evaluation never fails: a
//! missing output reads as the empty string.

use std::fmt;

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 1024;
/// How deeply `not`, `and`/`or` and parentheses may nest.
pub const MAX_DEPTH: usize = 16;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Compare {
        left: Operand,
        equal: bool,
        right: Operand,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Ref(Reference),
    Literal(String),
}

/// `steps.<id>.outputs.<key>` or `steps.<id>.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub step: String,
    /// `None` for the status, else the output key.
    pub output: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(key) => write!(f, "steps.{}.outputs.{key}", self.step),
            None => write!(f, "steps.{}.status", self.step),
        }
    }
}

/// Why an expression does not parse; `col` is the 1-based column (in characters) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at column {})", self.message, self.col)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Literal(String),
    Eq,
    Ne,
    Open,
    Close,
}

/// Parses `text` (see the module's grammar).
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_LEN {
        return Err(ExprError {
            col: 1,
            message: format!(
                "the expression is {} bytes long, more than the {MAX_LEN} allowed",
                text.len()
            ),
        });
    }
    let tokens = tokenize(text)?;
    let end = text.chars().count() + 1;
    let mut parser = Parser {
        tokens,
        next: 0,
        end,
    };
    let expr = parser.or(0)?;
    if let Some((col, token)) = parser.tokens.get(parser.next) {
        return Err(ExprError {
            col: *col,
            message: format!("unexpected {} after a complete expression", describe(token)),
        });
    }
    Ok(expr)
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let col = i + 1;
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push((col, Token::Open));
                i += 1;
            }
            ')' => {
                tokens.push((col, Token::Close));
                i += 1;
            }
            '=' | '!' if chars.get(i + 1) == Some(&'=') => {
                tokens.push((col, if c == '=' { Token::Eq } else { Token::Ne }));
                i += 2;
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(ExprError {
                                col,
                                message: "unterminated string: close it with '".into(),
                            })
                        }
                        Some('\'') => break,
                        Some('\\') if matches!(chars.get(i + 1), Some('\'' | '\\')) => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                i += 1;
                tokens.push((col, Token::Literal(value)));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
                {
                    i += 1;
                }
                tokens.push((col, Token::Word(chars[start..i].iter().collect())));
            }
            '"' => {
                return Err(ExprError {
                    col,
                    message: "strings are single-quoted: write 'approve', not \"approve\"".into(),
                })
            }
            '=' => {
                return Err(ExprError {
                    col,
                    message: "'=' is not an operator: compare with '=='".into(),
                })
            }
            other => {
                return Err(ExprError {
                    col,
                    message: format!("unexpected character '{other}': an expression compares steps.<id>.outputs.<key> or steps.<id>.status with a quoted string using == or !=, joined by and, or, not and parentheses"),
                })
            }
        }
    }
    Ok(tokens)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("'{w}'"),
        Token::Literal(s) => format!("string '{s}'"),
        Token::Eq => "'=='".into(),
        Token::Ne => "'!='".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    /// The column just past the text, for "expected ... at the end".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(c, _)| *c)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn deeper(&self, depth: usize) -> Result<usize, ExprError> {
        if depth >= MAX_DEPTH {
            return Err(ExprError {
                col: self.col(),
                message: format!("the expression nests more than {MAX_DEPTH} levels deep"),
            });
        }
        Ok(depth + 1)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let depth = self.deeper(depth)?;
        let mut left = self.and(depth)?;
        while self.is_word("or") {
            self.next += 1;
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let depth = self.deeper(depth)?;
        let mut left = self.unary(depth)?;
        while self.is_word("and") {
            self.next += 1;
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let depth = self.deeper(depth)?;
        if self.is_word("not") {
            self.next += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth)?)));
        }
        if self.peek() == Some(&Token::Open) {
            let open = self.col();
            self.next += 1;
            let inner = self.or(depth)?;
            if self.peek() != Some(&Token::Close) {
                return Err(ExprError {
                    col: self.col(),
                    message: format!("expected ')' to close the '(' at column {open}"),
                });
            }
            self.next += 1;
            return Ok(inner);
        }
        let left_col = self.col();
        let left = self.operand()?;
        let equal = match self.peek() {
            Some(Token::Eq) => true,
            Some(Token::Ne) => false,
            _ => {
                return Err(ExprError {
                    col: self.col(),
                    message: "expected '==' or '!=' after the operand".into(),
                })
            }
        };
        self.next += 1;
        let right = self.operand()?;
        if matches!((&left, &right), (Operand::Literal(_), Operand::Literal(_))) {
            return Err(ExprError {
                col: left_col,
                message: "a comparison of two strings is always the same: compare a reference (steps.<id>.outputs.<key> or steps.<id>.status)".into(),
            });
        }
        Ok(Expr::Compare { left, equal, right })
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let col = self.col();
        let Some((_, token)) = self.tokens.get(self.next).cloned() else {
            return Err(ExprError {
                col,
                message: "expected a reference or a quoted string at the end".into(),
            });
        };
        self.next += 1;
        match token {
            Token::Literal(value) => Ok(Operand::Literal(value)),
            Token::Word(word) => reference(&word)
                .map(Operand::Ref)
                .map_err(|message| ExprError { col, message }),
            other => Err(ExprError {
                col,
                message: format!(
                    "expected a reference or a quoted string, found {}",
                    describe(&other)
                ),
            }),
        }
    }
}

fn reference(word: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = word.split('.').collect();
    match parts.as_slice() {
        ["steps", step, "status"] if !step.is_empty() => Ok(Reference {
            step: step.to_string(),
            output: None,
        }),
        ["steps", step, "outputs", key] if !step.is_empty() && !key.is_empty() => Ok(Reference {
            step: step.to_string(),
            output: Some(key.to_string()),
        }),
        _ => Err(format!(
            "'{word}' is not a reference: write steps.<id>.outputs.<key> or steps.<id>.status (strings are single-quoted)"
        )),
    }
}

impl Expr {
    /// Every reference, left to right.
    pub fn references(&self) -> Vec<&Reference> {
        let mut found = Vec::new();
        self.collect(&mut found);
        found
    }

    fn collect<'a>(&'a self, found: &mut Vec<&'a Reference>) {
        match self {
            Expr::Compare { left, right, .. } => {
                for side in [left, right] {
                    if let Operand::Ref(r) = side {
                        found.push(r);
                    }
                }
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect(found);
                b.collect(found);
            }
            Expr::Not(a) => a.collect(found),
        }
    }

    /// The expression's value, with `read` giving each reference's text (a missing output
    /// is the empty string).
    pub fn eval(&self, read: &dyn Fn(&Reference) -> String) -> bool {
        match self {
            Expr::Compare { left, equal, right } => {
                let value = |side: &Operand| match side {
                    Operand::Ref(r) => read(r),
                    Operand::Literal(s) => s.clone(),
                };
                (value(left) == value(right)) == *equal
            }
            Expr::And(a, b) => a.eval(read) && b.eval(read),
            Expr::Or(a, b) => a.eval(read) || b.eval(read),
            Expr::Not(a) => !a.eval(read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(v: &'static str) -> impl Fn(&Reference) -> String {
        move |r: &Reference| match (r.step.as_str(), r.output.as_deref()) {
            ("review", Some("verdict")) => v.to_string(),
            ("review", None) => "succeeded".to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn comparisons_combine_with_and_or_not_and_parentheses() {
        let e = parse("steps.review.outputs.verdict == 'approve'").unwrap();
        assert!(e.eval(&verdict("approve")));
        assert!(!e.eval(&verdict("reject")));
        let e = parse("not (steps.review.outputs.verdict != 'approve' or steps.review.status == 'failed') and 'succeeded' == steps.review.status").unwrap();
        assert!(e.eval(&verdict("approve")));
        assert!(!e.eval(&verdict("reject")));
        assert_eq!(e.references().len(), 3);
        // `and` binds tighter than `or`.
        let e = parse("steps.a.status == 'x' and steps.a.status == 'y' or steps.review.outputs.verdict == 'approve'").unwrap();
        assert!(e.eval(&verdict("approve")));
    }

    #[test]
    fn a_missing_output_reads_as_the_empty_string() {
        let e = parse("steps.review.outputs.missing == ''").unwrap();
        assert!(e.eval(&verdict("approve")));
    }

    #[test]
    fn escapes_in_strings() {
        let e = parse(r"steps.review.outputs.verdict == 'it\'s \\ ok'").unwrap();
        assert!(e.eval(&verdict(r"it's \ ok")));
    }

    #[test]
    fn errors_say_what_and_at_which_column() {
        let cases = [
            ("steps.review.outputs.verdict = 'approve'", 30, "'=='"),
            (
                "steps.review.outputs.verdict == \"approve\"",
                33,
                "single-quoted",
            ),
            (
                "steps.review.outputs.verdict == 'approve",
                33,
                "unterminated",
            ),
            ("steps.review.verdict == 'approve'", 1, "not a reference"),
            (
                "(steps.review.status == 'succeeded'",
                36,
                "to close the '(' at column 1",
            ),
            ("steps.review.status 'x'", 21, "'==' or '!='"),
            ("'a' == 'b'", 1, "two strings"),
            (
                "steps.review.status == 'x' 'y'",
                28,
                "after a complete expression",
            ),
            ("steps.review.status ==", 23, "at the end"),
            (
                "steps.review.status == 'x' && steps.a.status == 'y'",
                28,
                "unexpected character '&'",
            ),
        ];
        for (text, col, needle) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.col, col, "{text}: {error}");
            assert!(error.message.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let deep = format!("{}steps.a.status == 'x'{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep)
            .unwrap_err()
            .message
            .contains("nests more than"));
        let nots = format!("{}steps.a.status == 'x'", "not ".repeat(40));
        assert!(parse(&nots)
            .unwrap_err()
            .message
            .contains("nests more than"));
        let long = format!("steps.a.status == '{}'", "x".repeat(MAX_LEN));
        assert!(parse(&long).unwrap_err().message.contains("bytes long"));
        let chain = vec!["steps.a.status == 'x'"; 40].join(" or ");
        assert_eq!(parse(&chain).unwrap().references().len(), 40);
    }
}
