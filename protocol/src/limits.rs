//! What a chat message may hold: checked by the relay before anything is numbered or relayed,
//! and usable by a client before it sends.
//!
//! The text is valid UTF-8 by construction (WebSocket text frames must be; the relay's socket
//! layer closes a connection that sends anything else with 1007). On top of that:
//! - `source`: not blank, at most [`MessageLimits::max_source_chars`] characters, no control
//!   characters at all (a name is one line) and no bidirectional controls (U+202A–U+202E,
//!   U+2066–U+2069), with which one name could be made to read as another;
//! - `content`: not blank (whitespace and zero-width characters alone count as blank), at most [`MessageLimits::max_content_chars`] characters, no control
//!   characters except line feed, carriage return and tab (multi-line messages are fine; NUL,
//!   escape sequences and the like are refused rather than passed on to other people's screens).
//!
//! Unicode format characters (for example right-to-left marks) are allowed: they are needed by
//! real languages, and the app shows content as text, never as HTML.

use crate::{ErrorCode, WireError};

/// Limits on a message's fields, in characters (Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Longest `source`. Default 64.
    pub max_source_chars: usize,
    /// Longest `content`. Default 10,000: a long message, still far below the 64 KiB frame limit.
    pub max_content_chars: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self { max_source_chars: 64, max_content_chars: 10_000 }
    }
}

impl MessageLimits {
    /// Checks a message's fields.
    ///
    /// # Errors
    /// The first problem found, as the error frame to answer with: [`ErrorCode::SourceInvalid`]
    /// or [`ErrorCode::ContentInvalid`] for blank fields and control characters,
    /// [`ErrorCode::TooLong`] for fields over the limits.
    pub fn check(&self, source: &str, content: &str) -> Result<(), WireError> {
        self.check_source(source)?;
        check_field("content", content, self.max_content_chars, ErrorCode::ContentInvalid, |c| {
            matches!(c, '\n' | '\r' | '\t')
        })
    }

    /// Checks a name alone, as [`MessageLimits::check`] checks a message's `source` (the relay
    /// checks the name a client gives in its socket's URL this way).
    ///
    /// # Errors
    /// As [`MessageLimits::check`] for the `source`.
    pub fn check_source(&self, source: &str) -> Result<(), WireError> {
        check_field("source", source, self.max_source_chars, ErrorCode::SourceInvalid, |_| false)?;
        if let Some(bidi) = source.chars().find(|&c| is_bidi_control(c)) {
            return Err(WireError::new(
                ErrorCode::SourceInvalid,
                format_args!(
                    "the source contains the bidirectional control U+{:04X}",
                    u32::from(bidi)
                ),
            ));
        }
        Ok(())
    }
}

fn check_field(
    name: &str,
    value: &str,
    max_chars: usize,
    invalid: ErrorCode,
    allowed_control: impl Fn(char) -> bool,
) -> Result<(), WireError> {
    if value.chars().all(|c| c.is_whitespace() || is_zero_width(c)) {
        return Err(WireError::new(invalid, format_args!("the {name} is empty")));
    }
    // Counting stops one past the limit: a huge field costs no more than a long one.
    let chars = value.chars().take(max_chars + 1).count();
    if chars > max_chars {
        return Err(WireError::new(
            ErrorCode::TooLong,
            format_args!("the {name} has more than {max_chars} characters"),
        ));
    }
    if let Some(control) = value.chars().find(|&c| c.is_control() && !allowed_control(c)) {
        return Err(WireError::new(
            invalid,
            format_args!("the {name} contains the control character U+{:04X}", u32::from(control)),
        ));
    }
    Ok(())
}

/// Characters that take no space: a field of these alone shows as nothing.
fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// Embedding, override and isolate controls, which reorder the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(source: &str, content: &str) -> Option<ErrorCode> {
        MessageLimits::default().check(source, content).err().map(|error| error.code)
    }

    /// Ordinary messages pass: several lines, tabs, emoji, right-to-left text.
    #[test]
    fn ordinary_messages_pass() {
        for content in ["hi", "line 1\nline 2\r\n\tindented", "🎉 שלום \u{200F}", "<b>as text</b>"]
        {
            assert_eq!(code("Zoë", content), None, "{content:?}");
        }
        let limits = MessageLimits::default();
        assert_eq!(code(&"n".repeat(64), &"c".repeat(limits.max_content_chars)), None);
    }

    /// Blank fields, control characters and over-long fields are refused, each with its code.
    #[test]
    fn bad_fields_are_refused_with_their_code() {
        let cases = [
            ("", "hi", ErrorCode::SourceInvalid),
            ("  ", "hi", ErrorCode::SourceInvalid),
            ("ada\n", "hi", ErrorCode::SourceInvalid),
            ("a\u{7}", "hi", ErrorCode::SourceInvalid),
            ("ada", "", ErrorCode::ContentInvalid),
            ("ada", " \n\t ", ErrorCode::ContentInvalid),
            ("ada", "\u{200b}\u{feff}", ErrorCode::ContentInvalid),
            ("ada\u{202e}", "hi", ErrorCode::SourceInvalid),
            ("\u{2066}ada", "hi", ErrorCode::SourceInvalid),
            ("ada", "nul \0 here", ErrorCode::ContentInvalid),
            ("ada", "escape \u{1b}[31m red", ErrorCode::ContentInvalid),
            ("ada", "delete \u{7f}", ErrorCode::ContentInvalid),
            ("ada", "c1 \u{9b} control", ErrorCode::ContentInvalid),
            (&"n".repeat(65), "hi", ErrorCode::TooLong),
            ("ada", &"é".repeat(10_001), ErrorCode::TooLong),
        ];
        for (source, content, expected) in cases {
            assert_eq!(code(source, content), Some(expected), "{source:?} / {content:.20?}");
        }
    }

    /// The explanation names the field and the character or the limit.
    #[test]
    fn refusals_explain_themselves() {
        let error = MessageLimits::default().check("ada", "a\0b").unwrap_err();
        assert!(error.message.contains("content contains the control character U+0000"), "{error}");
        let error = MessageLimits::default().check(&"n".repeat(65), "hi").unwrap_err();
        assert!(error.message.contains("source has more than 64 characters"), "{error}");
    }
}
