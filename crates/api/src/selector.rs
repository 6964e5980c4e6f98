//! Label selectors as apimachinery's `labels` package has them: the string grammar
//! (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-separated, also `a>1`,
//! `a<1`), upstream's parse error messages, matching, and the canonical string form
//! (requirements sorted by key, `app=nginx,env=prod`).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use crate::field_error::{aggregate_message, FieldError};
use crate::naming;

/// A selector parse or construction error; `Display` is upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// Selector operators (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// The operator's name as upstream spells it (`in`, `notin`, `=`, `==`, `!=`, `exists`, `!`, `gt`, `lt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// NewRequirement: validates the key, the number of values for the operator and each value.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errs = Vec::new();
        let msgs = naming::is_qualified_name(key);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid("key", key, msgs.join("; ")));
        }
        // A Go nil slice marshals as `null`.
        let vals = if values.is_empty() {
            Value::Null
        } else {
            Value::Array(values.iter().map(|v| Value::String(v.clone())).collect())
        };
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(FieldError::invalid(
                        "values",
                        vals,
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        "values",
                        vals,
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(FieldError::invalid(
                        "values",
                        vals,
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        "values",
                        vals,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            format!("values[{i}]"),
                            v.as_str(),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = naming::is_valid_label_value(v);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(format!("values[{i}][{key}]"), v.as_str(), msgs.join("; ")));
            }
        }
        if !errs.is_empty() {
            return Err(SelectorError(aggregate_message(&errs)));
        }
        Ok(Requirement { key: key.to_string(), operator, values })
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether the labels satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => got.is_some_and(|v| self.has_value(v)),
            Operator::NotIn | Operator::NotEquals => got.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(lv) = got.and_then(|v| v.parse::<i64>().ok()) else { return false };
                if self.values.len() != 1 {
                    return false;
                }
                let Ok(rv) = self.values[0].parse::<i64>() else { return false };
                (self.operator == Operator::GreaterThan && lv > rv) || (self.operator == Operator::LessThan && lv < rv)
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            write!(f, "!")?;
        }
        write!(f, "{}", self.key)?;
        match self.operator {
            Operator::Equals => write!(f, "=")?,
            Operator::DoubleEquals => write!(f, "==")?,
            Operator::NotEquals => write!(f, "!=")?,
            Operator::In => write!(f, " in ")?,
            Operator::NotIn => write!(f, " notin ")?,
            Operator::GreaterThan => write!(f, ">")?,
            Operator::LessThan => write!(f, "<")?,
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        }
        let parens = matches!(self.operator, Operator::In | Operator::NotIn);
        if parens {
            write!(f, "(")?;
        }
        if self.values.len() == 1 {
            write!(f, "{}", self.values[0])?;
        } else {
            let mut v = self.values.clone();
            v.sort();
            write!(f, "{}", v.join(","))?;
        }
        if parens {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// A label selector: a conjunction of requirements, or "nothing" (matches no object, as a nil
/// `metav1.LabelSelector` converts upstream).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object (upstream `labels.Nothing()`).
    pub fn nothing() -> Self {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parses a selector string (`labels.Parse`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut p = Parser::new(s);
        let mut reqs = p.parse()?;
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements: reqs, nothing: false })
    }

    /// From a `metav1.LabelSelector` (`metav1.LabelSelectorAsSelector`): an empty one matches
    /// everything.
    pub fn from_k8s(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let ml = sel.match_labels.as_ref();
        let me = sel.match_expressions.as_deref().unwrap_or(&[]);
        if ml.map_or(0, |m| m.len()) + me.len() == 0 {
            return Ok(Self::everything());
        }
        let mut reqs = Vec::new();
        if let Some(ml) = ml {
            for (k, v) in ml {
                reqs.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
            }
        }
        for e in me {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{} is not a valid label selector operator",
                        crate::field_error::go_quote(other)
                    )))
                }
            };
            reqs.push(Requirement::new(&e.key, op, e.values.clone().unwrap_or_default())?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements: reqs, nothing: false })
    }

    /// As [`LabelSelector::from_k8s`], with `None` (a nil selector) matching nothing.
    pub fn from_k8s_opt(sel: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        match sel {
            None => Ok(Self::nothing()),
            Some(s) => Self::from_k8s(s),
        }
    }

    /// From a JSON `metav1.LabelSelector` (`null` matches nothing).
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        if v.is_null() {
            return Ok(Self::nothing());
        }
        let sel: metav1::LabelSelector = serde_json::from_value(v.clone()).map_err(|e| SelectorError(e.to_string()))?;
        Self::from_k8s(&sel)
    }

    /// Equality requirements for every pair (`labels.SelectorFromSet`); an empty map matches
    /// everything.
    pub fn from_map(m: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: m
                .iter()
                .map(|(k, v)| Requirement { key: k.clone(), operator: Operator::Equals, values: vec![v.clone()] })
                .collect(),
            nothing: false,
        }
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches the `metadata.labels` of a JSON object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// True when the selector has no requirement (matches everything, or is "nothing").
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True for the selector that matches no object.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The label value this selector requires for `key` through `=`, `==` or a one-value `in`.
    pub fn required_exact_match(&self, key: &str) -> Option<&str> {
        self.requirements.iter().find_map(|r| match r.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In if r.key == key && r.values.len() == 1 => {
                Some(r.values[0].as_str())
            }
            _ => None,
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join(","))
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `metadata.labels` of a JSON object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted by key, `<none>` when empty.
pub fn format_labels(m: &BTreeMap<String, String>) -> String {
    let s = LabelSelector::from_map(m).to_string();
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>` when invalid.
pub fn format_label_selector(sel: Option<&metav1::LabelSelector>) -> String {
    match LabelSelector::from_k8s_opt(sel) {
        Err(_) => "<error>".to_string(),
        Ok(s) => {
            let s = s.to_string();
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser (apimachinery labels/selector.go)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn token_of(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() || b[pos] == 0 {
            out.push((Token::EndOfString, String::new()));
            return out;
        }
        if is_special(b[pos]) {
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                let cand = &s[start..pos + 1];
                if let Some(t) = token_of(cand) {
                    last = Some((t, pos + 1));
                    pos += 1;
                } else if last.is_some() {
                    break;
                } else {
                    pos += 1;
                }
            }
            match last {
                Some((t, end)) => {
                    out.push((t, s[start..end].to_string()));
                    pos = end;
                }
                None => {
                    // Unreachable with upstream's token table (every special symbol is a token).
                    out.push((Token::Identifier, s[start..pos].to_string()));
                }
            }
        } else {
            let start = pos;
            while pos < b.len() && b[pos] != 0 && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            out.push((token_of(lit).unwrap_or(Token::Identifier), lit.to_string()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn new(s: &str) -> Self {
        Parser { items: lex(s), pos: 0 }
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (mut t, l) = self.items[self.pos.min(self.items.len() - 1)].clone();
        if ctx == Context::Values && matches!(t, Token::In | Token::NotIn) {
            t = Token::Identifier;
        }
        (t, l)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let r = self.lookahead(ctx);
        if self.pos < self.items.len() - 1 {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Context::Values);
            match t {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {}", e.0)))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError(format!("found '{l2}', expected: identifier after ','")));
                            }
                        }
                        _ => return Err(SelectorError(format!("found '{l}', expected: ',' or 'end of string'"))),
                    }
                }
                Token::EndOfString => return Ok(reqs),
                _ => return Err(SelectorError(format!("found '{lit}', expected: !, identifier, or 'end of string'"))),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        Requirement::new(&key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let mut op = None;
        let (mut t, mut lit) = self.consume(Context::Values);
        if t == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (t, lit) = self.consume(Context::Values);
        }
        if t != Token::Identifier {
            return Err(SelectorError(format!("found '{lit}', expected: identifier")));
        }
        let msgs = naming::is_qualified_name(&lit);
        if !msgs.is_empty() {
            return Err(SelectorError(FieldError::invalid("<nil>", lit.as_str(), msgs.join("; ")).to_string()));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && op != Some(Operator::DoesNotExist) {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let (t, lit) = self.consume(Context::KeyAndOperator);
        Ok(match t {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(SelectorError(format!("found '{lit}', expected: {BINARY_OPERATORS}"))),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (t, lit) = self.consume(Context::Values);
        if t != Token::OpenPar {
            return Err(SelectorError(format!("found '{lit}' expected: '('")));
        }
        let (t, lit) = self.lookahead(Context::Values);
        match t {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t2, _) = self.consume(Context::Values);
                if t2 != Token::ClosedPar {
                    return Err(SelectorError(format!("found '{lit}', expected: ')'")));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(SelectorError(format!("found '{lit}', expected: ',', ')' or identifier"))),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (t, lit) = self.consume(Context::Values);
            match t {
                Token::Identifier => {
                    s.push(lit);
                    let (t2, l2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(SelectorError(format!("found '{l2}', expected: ',' or ')'"))),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        s.push(String::new());
                    }
                }
                _ => return Err(SelectorError(format!("found '{lit}', expected: ',', or identifier"))),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (t, _) = self.lookahead(Context::Values);
        if t == Token::EndOfString || t == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(Context::Values);
        if t == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(SelectorError(format!("found '{lit}', expected: identifier")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parse_and_canonical_string() {
        let cases = [
            ("", ""),
            ("app=nginx", "app=nginx"),
            ("env=prod,app=nginx", "app=nginx,env=prod"),
            ("x==y", "x==y"),
            ("x!=y", "x!=y"),
            ("env in (qa, prod)", "env in (prod,qa)"),
            ("env notin (qa)", "env notin (qa)"),
            ("tier,!canary", "!canary,tier"),
            ("a=", "a="),
            ("in=x", "in=x"),
            ("n>5", "n>5"),
            ("  app = nginx ,  tier  ", "app=nginx,tier"),
            ("a in (,b)", "a in (,b)"),
            ("x in ()", "x in ()"),
        ];
        for (input, want) in cases {
            let s = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(s.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn parse_errors_match_upstream() {
        let cases = [
            ("x=a,", "found '', expected: identifier after ','"),
            ("=a", "found '=', expected: !, identifier, or 'end of string'"),
            ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
            ("x in a", "unable to parse requirement: found 'a' expected: '('"),
            ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("x ( a", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
            ("x=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("x>a", "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"),
        ];
        for (input, want) in cases {
            match LabelSelector::parse(input) {
                Ok(s) => panic!("{input}: parsed as {s}"),
                Err(e) => assert_eq!(e.to_string(), want, "input {input:?}"),
            }
        }
        let e = LabelSelector::parse("a b/c/d=x").unwrap_err();
        assert_eq!(e.to_string(), "unable to parse requirement: found 'b/c/d', expected: in, notin, =, ==, !=, gt, lt");
        let e = LabelSelector::parse("b/c/d=x").unwrap_err();
        assert!(e.to_string().starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"b/c/d\": a valid label key must consist"
        ));
        let e = LabelSelector::parse("a=b c").unwrap_err();
        assert_eq!(e.to_string(), "found 'c', expected: ',' or 'end of string'");
        let e = LabelSelector::parse("a=b$").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label must be"));
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "nginx"), ("env", "prod"), ("n", "7")]);
        let yes = [
            "app=nginx",
            "app==nginx",
            "app!=web",
            "env in (qa,prod)",
            "env notin (qa)",
            "app",
            "!canary",
            "n>5",
            "n<8",
            "",
            "x!=y",
            "x notin (a)",
        ];
        let no = [
            "app=web",
            "app!=nginx",
            "env in (qa)",
            "env notin (prod)",
            "canary",
            "!app",
            "n>7",
            "n<7",
            "x=y",
            "x in (a)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&l), "{s} should match");
        }
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&l), "{s} should not match");
        }
        assert!(!LabelSelector::nothing().matches(&l));
        assert!(LabelSelector::everything().matches(&l));
    }

    #[test]
    fn from_map_and_k8s() {
        let m = labels(&[("env", "prod"), ("app", "nginx")]);
        let s = LabelSelector::from_map(&m);
        assert_eq!(s.to_string(), "app=nginx,env=prod");
        assert!(s.matches(&m));
        assert!(LabelSelector::from_map(&BTreeMap::new()).is_empty());
        let ks: metav1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}, {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let s = LabelSelector::from_k8s(&ks).unwrap();
        assert_eq!(s.to_string(), "app=web,!canary,tier in (be,fe)");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])));
        let bad: metav1::LabelSelector =
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})).unwrap();
        assert_eq!(
            LabelSelector::from_k8s(&bad).unwrap_err().to_string(),
            "\"Foo\" is not a valid label selector operator"
        );
        let empty_in: metav1::LabelSelector =
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).unwrap();
        assert_eq!(
            LabelSelector::from_k8s(&empty_in).unwrap_err().to_string(),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&ks)), "app=web,!canary,tier in (be,fe)");
        assert_eq!(format_labels(&BTreeMap::new()), "<none>");
        assert!(LabelSelector::from_json(&Value::Null).unwrap().is_nothing());
    }
}
