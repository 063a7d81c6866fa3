//! One-line diagnostics shared by both binaries.

use std::ops::Range;

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
    let snippet: String = text[line_start..line_end].trim().chars().take(80).collect();
    if snippet.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("line {line_no} (`{snippet}`): {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
