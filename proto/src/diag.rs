//! Configuration files and one-line diagnostics, shared by both binaries.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// A configuration that cannot be loaded, or that loads but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Parses TOML text; the error is one line.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| config_error_line(text, e.message(), e.span()))
}

/// Reads and parses a TOML file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text).map_err(|message| ConfigFileError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Keys of a shipped example config with no comment line right above them:
/// every key must say what it does.
pub fn undocumented_keys(text: &str) -> Vec<String> {
    let mut previous_is_comment = false;
    let mut missing = Vec::new();
    for line in text.lines().map(str::trim) {
        let is_key = !line.starts_with('#') && !line.starts_with('[') && line.contains('=');
        if is_key && !previous_is_comment {
            missing.push(line.to_owned());
        }
        previous_is_comment = line.starts_with('#');
    }
    missing
}

/// Turns a TOML error (message + byte span in `text`) into one line that
/// names the line, shows it, and says what is wrong:
/// ``line 3 (`report_interval = 5`): unknown field `report_interval`, expected ...``
pub fn config_error_line(text: &str, message: &str, span: Option<Range<usize>>) -> String {
    let message = message.trim().replace('\n', " ");
    let Some(span) = span else { return message };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let snippet: String = hide_password(text[line_start..line_end].trim())
        .chars()
        .take(80)
        .collect();
    if snippet.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("line {line_no} (`{snippet}`): {message}")
    }
}

/// A URL's password (`scheme://user:PASSWORD@host`) as `***`: a line of a
/// config file quoted in an error goes to terminals and journals.
fn hide_password(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(['/', '"', '\'', ' ', '?']).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                let userinfo = &tail[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push('@');
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_line_never_shows_a_password() {
        let text = "[store]\nurl = \"postgres://rollcall:s3cr@t-ish@db:5432/rollcall\" x\n";
        let line = config_error_line(text, "expected newline", Some(40..41));
        assert!(!line.contains("s3cr"), "{line}");
        assert!(line.contains("postgres://rollcall:***@db:5432"), "{line}");
        assert_eq!(
            hide_password("a = \"https://h:1/p\""),
            "a = \"https://h:1/p\""
        );
        assert_eq!(hide_password("u://user@h"), "u://user@h");
    }

    #[test]
    fn finds_keys_without_a_comment() {
        let text = "# what a does\na = 1\nb = 2\n[t]\n# c\nc = 3\n";
        assert_eq!(undocumented_keys(text), ["b = 2"]);
    }

    #[test]
    fn names_the_line_and_shows_it() {
        let text = "a = 1\nlisten = 7443\n";
        let line = config_error_line(
            text,
            "invalid type: integer `7443`, expected socket address\n",
            Some(15..19),
        );
        assert_eq!(
            line,
            "line 2 (`listen = 7443`): invalid type: integer `7443`, expected socket address"
        );
        assert_eq!(config_error_line(text, "missing", None), "missing");
    }
}
