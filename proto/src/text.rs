//! Text that came from somewhere we do not trust (an agent's report, an
//! operator's request, a campaign's action output), made safe to show a
//! person: on a terminal, or in one line of a log.
//!
//! The rule, for both [`for_terminal`] and [`Untrusted`]: every C0 control
//! (newline, carriage return and tab included), DEL, every C1 control
//! (U+0080..=U+009F, where U+009B is a one-byte CSI), the Unicode bidi
//! controls (U+061C, U+200E, U+200F, U+202A..=U+202E, U+2066..=U+2069) and
//! the Unicode line and paragraph separators (U+2028, U+2029) are written
//! as visible escapes: `\n`, `\r`, `\t`, `\x1b`, `\u{202e}`. A backslash is
//! doubled, so a string cannot forge an escape: what a person reads as
//! `\n` was a newline, and `\\n` was a backslash and an `n`. Everything
//! else, ordinary UTF-8 included, passes unchanged. The output is one line,
//! always.
//!
//! `--json` output does not come through here: serde escapes it exactly.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` is shown escaped rather than as itself.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x1f'
            | '\\'
            | '\x7f'
            | '\u{80}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// Writes `c` (one that [`needs_escape`]) in its visible form.
fn write_escape(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\\' => out.write_str("\\\\"),
        // Two hex digits for the ASCII controls, as people know `\x1b`.
        c if c.is_ascii() => write!(out, "\\x{:02x}", u32::from(c)),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// Writes `s` escaped, and at most `max_chars` characters of it (counted
/// before escaping); returns how many bytes of `s` were left out.
fn write_escaped(
    out: &mut impl fmt::Write,
    s: &str,
    max_chars: usize,
) -> Result<usize, fmt::Error> {
    let mut start = 0;
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n == max_chars {
            out.write_str(&s[start..i])?;
            return Ok(s.len() - i);
        }
        if needs_escape(c) {
            out.write_str(&s[start..i])?;
            write_escape(out, c)?;
            start = i + c.len_utf8();
        }
    }
    out.write_str(&s[start..])?;
    Ok(0)
}

/// What a person's terminal may show of `s`: the same text with every
/// control character visibly escaped (see the module's rule), on one line.
/// Borrowed when nothing needs escaping, which is nearly always.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, &s[first..], usize::MAX);
    Cow::Owned(out)
}

/// At most `max_chars` characters of `s`, and `…` after them when more
/// followed: the one way a long text is shortened for a person.
pub fn cut(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// How many characters of an [`Untrusted`] string a log line shows.
pub const LOG_MAX_CHARS: usize = 256;

/// An untrusted string as a log field: `warn!(action = %Untrusted(&id), ...)`.
/// Escaped as [`for_terminal`] escapes it, and cut after [`LOG_MAX_CHARS`]
/// characters with `…(N more bytes)`, so that a log line stays one line of
/// a readable length whatever an agent sent.
#[derive(Clone, Copy, Debug)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rest = write_escaped(f, self.0, LOG_MAX_CHARS)?;
        if rest > 0 {
            write!(f, "…({rest} more bytes)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters_and_marks_the_cut() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert!(matches!(cut("héllo", 5), Cow::Borrowed(_)));
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("", 0), "");
        assert_eq!(cut("x", 0), "…");
    }

    fn owned(s: &str) -> String {
        match for_terminal(s) {
            Cow::Owned(o) => o,
            Cow::Borrowed(b) => panic!("{b:?} should have been escaped"),
        }
    }

    #[test]
    fn terminal_escapes_are_shown_not_obeyed() {
        assert_eq!(owned("\x1b[2Jgone"), r"\x1b[2Jgone");
        assert_eq!(owned("\x1b]0;pwned\x07"), r"\x1b]0;pwned\x07");
        assert_eq!(
            owned("\x1b]52;c;cm0gLXJmIH4=\x07"),
            r"\x1b]52;c;cm0gLXJmIH4=\x07"
        );
        assert_eq!(owned("a\u{9b}31mred"), r"a\u{9b}31mred");
        assert_eq!(owned("del\x7f"), r"del\x7f");
        assert_eq!(owned("\0\r\t"), r"\x00\r\t");
    }

    #[test]
    fn a_newline_cannot_forge_a_row() {
        let forged = "nova_api\ncmp9  running  healthy";
        let shown = owned(forged);
        assert_eq!(shown, r"nova_api\ncmp9  running  healthy");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn bidi_controls_and_line_separators_are_escaped() {
        assert_eq!(owned("evil\u{202e}txt.exe"), r"evil\u{202e}txt.exe");
        assert_eq!(
            owned("\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}\u{202a}"),
            r"\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}\u{202a}"
        );
        assert_eq!(owned("a\u{2028}b\u{2029}"), r"a\u{2028}b\u{2029}");
    }

    #[test]
    fn a_backslash_is_doubled_so_escapes_cannot_be_forged() {
        // Shown as `\\n`: a person can tell it from a real newline (`\n`).
        assert_eq!(owned(r"C:\new"), r"C:\\new");
        assert_eq!(owned("\\\n"), r"\\\n");
    }

    #[test]
    fn ordinary_text_passes_unchanged_and_borrowed() {
        for s in [
            "",
            "nova_compute",
            "Debian GNU/Linux 12 (bookworm)",
            "Zürich",
            "東京-ctl1",
            "emoji 🦀 ok",
            "quote\"and'apostrophe",
        ] {
            assert!(
                matches!(for_terminal(s), Cow::Borrowed(b) if b == s),
                "{s:?} should pass borrowed"
            );
        }
    }

    #[test]
    fn escaped_text_keeps_the_utf8_around_it() {
        assert_eq!(owned("Zürich\n東京"), r"Zürich\n東京");
    }

    #[test]
    fn untrusted_escapes_like_the_terminal_and_stays_short() {
        assert_eq!(
            Untrusted("act-1\nINFO forged line").to_string(),
            r"act-1\nINFO forged line"
        );
        assert_eq!(Untrusted("plain").to_string(), "plain");
        let long = "é".repeat(300);
        let shown = Untrusted(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…(88 more bytes)", "é".repeat(LOG_MAX_CHARS))
        );
        // Exactly the limit is shown whole.
        let exact = "x".repeat(LOG_MAX_CHARS);
        assert_eq!(Untrusted(&exact).to_string(), exact);
    }
}
