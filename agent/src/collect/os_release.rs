//! os-release(5): `KEY=value` lines, values optionally quoted.

use std::collections::HashMap;

pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), unquote(v.trim())))
        .collect()
}

fn unquote(v: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
        .unwrap_or(v);
    // Backslash escapes shell-special characters inside double quotes.
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_bookworm() {
        let text = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
        let f = parse(text);
        assert_eq!(f["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["VERSION_ID"], "12");
    }

    #[test]
    fn parses_rocky_with_comments_single_quotes_and_escapes() {
        let text = "# comment\nID='rocky'\nPRETTY_NAME=\"Rocky Linux 9.4 \\\"Blue Onyx\\\"\"\nbroken line\n";
        let f = parse(text);
        assert_eq!(f["ID"], "rocky");
        assert_eq!(f["PRETTY_NAME"], "Rocky Linux 9.4 \"Blue Onyx\"");
        assert_eq!(f.len(), 2);
    }
}
