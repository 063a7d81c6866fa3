//! Prometheus-style label matchers (`{severity="critical", service=~"galera"}`)
//! and whole-value regexes, parsed once with the spec, each bad one one
//! clear line; and the silence matchers made from `{node}` templates.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A regex matched against a whole value (Prometheus anchors its regexes).
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        let regex = regex::Regex::new(&format!("^(?:{text})$"))
            .map_err(|e| format!("{text:?} is not a regex: {}", one_line(&e.to_string())))?;
        Ok(Pattern {
            text: text.to_owned(),
            regex,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(|e| serde::de::Error::custom(format!("alertname: {e}")))
    }
}

/// The regex crate's errors span lines (the pattern, a caret, the cause).
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(s)
        .to_owned()
}

/// How a matcher compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }

    pub fn is_regex(self) -> bool {
        matches!(self, Op::Regex | Op::NotRegex)
    }

    pub fn is_equal(self) -> bool {
        matches!(self, Op::Equal | Op::Regex)
    }
}

/// One label matcher, `severity="critical"` or `service=~"galera|rabbitmq"`.
/// A missing label has the empty value, as in Prometheus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    pattern: Option<Pattern>,
}

impl Matcher {
    pub fn new(name: &str, op: Op, value: &str) -> Result<Self, String> {
        let pattern = if op.is_regex() {
            Some(Pattern::new(value).map_err(|e| format!("{name}{}{e}", op.as_str()))?)
        } else {
            None
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            pattern,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        let found = match &self.pattern {
            Some(p) => p.is_match(value),
            None => value == self.value,
        };
        found == self.op.is_equal()
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.name,
            self.op.as_str(),
            quoted(&self.value)
        )
    }
}

/// A value as a matcher writes it: double-quoted, `"` and `\` escaped,
/// and every character a terminal could obey shown as `for_terminal`
/// shows it.
pub(super) fn quoted(value: &str) -> String {
    format!("\"{}\"", escaped(value, true))
}

/// `s` with the characters `for_terminal` escapes shown escaped, and (in
/// a quoted value) `"` and `\` backslash-escaped as matchers write them.
pub(super) fn escaped(s: &str, in_quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut one = [0u8; 4];
    for c in s.chars() {
        match c {
            '"' | '\\' if in_quotes => {
                out.push('\\');
                out.push(c);
            }
            c => out.push_str(&rollcall_proto::text::for_terminal(c.encode_utf8(&mut one))),
        }
    }
    out
}

/// Matchers that must all match: `{severity="critical", service=~"galera"}`
/// (the braces may be left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatcherSet(pub Vec<Matcher>);

impl MatcherSet {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
}

impl fmt::Display for MatcherSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

impl FromStr for MatcherSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let raw = parse_raw(s).map_err(|e| format!("matcher {s:?}: {e}"))?;
        raw.into_iter()
            .map(|(name, op, value)| Matcher::new(&name, op, &value))
            .collect::<Result<Vec<_>, _>>()
            .map(MatcherSet)
            .map_err(|e| format!("matcher {s:?}: {e}"))
    }
}

impl<'de> Deserialize<'de> for MatcherSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("alerts.matchers: {e}")))
    }
}

/// The silence's matchers for `node`: the spec's templates with `{node}`
/// replaced (regex-escaped in a regex matcher), each checked.
pub fn silence_matchers(templates: &[String], node: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for template in templates {
        let raw = parse_raw(template).map_err(|e| format!("matcher {template:?}: {e}"))?;
        for (name, op, value) in raw {
            let with = if op.is_regex() {
                regex::escape(node)
            } else {
                node.to_owned()
            };
            let value = value.replace("{node}", &with);
            out.push(Matcher::new(&name, op, &value).map_err(|e| format!("{template:?}: {e}"))?);
        }
    }
    Ok(out)
}

/// Parses `{a="x", b=~"y"}` into (name, op, unescaped value) triples.
fn parse_raw(s: &str) -> Result<Vec<(String, Op, String)>, String> {
    let mut p = Parser {
        chars: s.char_indices().peekable(),
    };
    p.skip_ws();
    let braced = p.eat('{');
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if braced && p.eat('}') {
            break;
        }
        if p.at_end() {
            if braced {
                return Err("no closing '}'".into());
            }
            break;
        }
        let name = p.name()?;
        p.skip_ws();
        let op = p.op(&name)?;
        p.skip_ws();
        let value = p.string(&name)?;
        out.push((name, op, value));
        p.skip_ws();
        if !p.eat(',') {
            if braced {
                p.skip_ws();
                if !p.eat('}') {
                    return Err(p.unexpected("',' or '}'"));
                }
                break;
            }
            if !p.at_end() {
                return Err(p.unexpected("','"));
            }
            break;
        }
    }
    p.skip_ws();
    if !p.at_end() {
        return Err(p.unexpected("the end"));
    }
    Ok(out)
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }

    fn eat(&mut self, want: char) -> bool {
        self.chars.next_if(|(_, c)| *c == want).is_some()
    }

    fn at_end(&mut self) -> bool {
        self.chars.peek().is_none()
    }

    fn unexpected(&mut self, wanted: &str) -> String {
        match self.chars.peek() {
            Some((i, c)) => format!("expected {wanted} at character {}, found {c:?}", i + 1),
            None => format!("expected {wanted}, found the end"),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let mut name = String::new();
        while let Some((_, c)) = self
            .chars
            .next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.unexpected("a label name"));
        }
        Ok(name)
    }

    fn op(&mut self, name: &str) -> Result<Op, String> {
        let op = if self.eat('=') {
            if self.eat('~') { Op::Regex } else { Op::Equal }
        } else if self.eat('!') {
            if self.eat('=') {
                Op::NotEqual
            } else if self.eat('~') {
                Op::NotRegex
            } else {
                return Err(self.unexpected("'=' or '~' after '!'"));
            }
        } else {
            return Err(self.unexpected(&format!("=, !=, =~ or !~ after {name}")));
        };
        Ok(op)
    }

    fn string(&mut self, name: &str) -> Result<String, String> {
        if !self.eat('"') {
            return Err(self.unexpected(&format!("a double-quoted value for {name}")));
        }
        let mut value = String::new();
        loop {
            match self.chars.next() {
                None => return Err(format!("the value of {name} has no closing '\"'")),
                Some((_, '"')) => return Ok(value),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((i, c)) => {
                        return Err(format!(
                            "unknown escape \\{c} at character {i} (use \\\\ for a backslash)"
                        ));
                    }
                    None => return Err(format!("the value of {name} has no closing '\"'")),
                },
                Some((_, c)) => value.push(c),
            }
        }
    }
}
