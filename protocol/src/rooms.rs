//! Rooms: what a room may be called, the room everyone starts in, and the name patterns a token
//! grants rooms by.
//!
//! A room name is what a client typed, lower-cased (ASCII only), then 1 to [`MAX_ROOM_NAME`]
//! characters from `[a-z0-9._-]`: short enough for a list, safe in a URL (`/?room=NAME`) and in a
//! log line, and one spelling per room (`Team-A` and `team-a` are the same room). Anything else is
//! refused with [`ErrorCode::RoomInvalid`]; non-ASCII letters are refused rather than folded, so
//! that no two different-looking names land in one room (the Kelvin sign lower-cases to `k`).

use crate::{ErrorCode, WireError};

/// The room every client starts in: the tutorial's client only ever speaks here, and the app
/// opens it unless told otherwise.
pub const LOBBY: &str = "lobby";

/// The longest room name, in characters (all ASCII, so also in bytes).
pub const MAX_ROOM_NAME: usize = 64;

/// The room called `name`, spelled as the relay spells it: lower-cased.
///
/// # Errors
/// A [`WireError`] with [`ErrorCode::RoomInvalid`] saying what is wrong: empty, longer than
/// [`MAX_ROOM_NAME`], or holding a character other than `a-z`, `0-9`, `.`, `_` and `-`.
pub fn room_name(name: &str) -> Result<String, WireError> {
    let refuse =
        |detail: std::fmt::Arguments<'_>| Err(WireError::new(ErrorCode::RoomInvalid, detail));
    if name.is_empty() {
        return refuse(format_args!("the room name is empty"));
    }
    // Counting stops one past the limit: a huge name costs no more than a long one.
    if name.chars().take(MAX_ROOM_NAME + 1).count() > MAX_ROOM_NAME {
        return refuse(format_args!("a room name has at most {MAX_ROOM_NAME} characters"));
    }
    if let Some(bad) = name.chars().find(|&c| !is_room_char(c.to_ascii_lowercase())) {
        return refuse(format_args!(
            "a room name holds only a-z, 0-9, '.', '_' and '-', not U+{:04X}",
            u32::from(bad)
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn is_room_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-')
}

/// Whether `room` (a name as [`room_name`] returns it) matches `pattern`, in which `*` stands for
/// any run of characters (none included) and everything else for itself, compared without case:
/// `team-*` matches `team-a` and `team-`, `*` matches every room, `lobby` only the lobby.
#[must_use]
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    let pattern = pattern.as_bytes();
    let room = room.as_bytes();
    // The classic wildcard walk: on a mismatch, go back to the last `*` and let it take one more
    // character. Linear in practice, at worst pattern × room (64 characters).
    let (mut p, mut r) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while r < room.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, r));
                p += 1;
            }
            Some(&c) if c.eq_ignore_ascii_case(&room[r]) => {
                p += 1;
                r += 1;
            }
            _ => match star {
                Some((star_p, star_r)) => {
                    p = star_p + 1;
                    r = star_r + 1;
                    star = Some((star_p, star_r + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether any of `patterns` matches `room`.
#[must_use]
pub fn any_pattern_matches<S: AsRef<str>>(patterns: &[S], room: &str) -> bool {
    patterns.iter().any(|pattern| pattern_matches(pattern.as_ref(), room))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Good names come back lower-cased; the lobby is a good name.
    #[test]
    fn names_are_lower_cased() {
        for (given, expected) in [
            ("lobby", "lobby"),
            ("Team-A", "team-a"),
            ("a", "a"),
            ("release_1.2", "release_1.2"),
            ("...", "..."),
            (&"x".repeat(64), &"x".repeat(64)),
        ] {
            assert_eq!(room_name(given).as_deref(), Ok(expected), "{given}");
        }
        assert_eq!(room_name(LOBBY).as_deref(), Ok(LOBBY));
    }

    /// Every kind of bad name is refused with `room_invalid`, saying why.
    #[test]
    fn bad_names_are_refused() {
        let cases = [
            ("", "empty"),
            (&"x".repeat(65) as &str, "at most 64"),
            ("two words", "U+0020"),
            ("tab\there", "U+0009"),
            ("new\nline", "U+000A"),
            ("slash/room", "U+002F"),
            ("café", "U+00E9"),
            ("\u{212A}elvin", "U+212A"),
            ("emoji🎉", "U+1F389"),
            ("null\0", "U+0000"),
            ("star*", "U+002A"),
        ];
        for (name, detail) in cases {
            let error = room_name(name).unwrap_err();
            assert_eq!(error.code, ErrorCode::RoomInvalid, "{name:?}");
            assert!(error.message.contains(detail), "{name:?}: {error}");
        }
        // A huge name is refused as long, without counting all of it.
        assert!(room_name(&"é".repeat(100_000)).unwrap_err().message.contains("at most 64"));
    }

    /// `*` stands for any run of characters, anywhere in the pattern; the rest must match
    /// exactly, without case.
    #[test]
    fn patterns_match_with_stars() {
        let matching = [
            ("lobby", "lobby"),
            ("*", "anything"),
            ("*", "a"),
            ("team-*", "team-a"),
            ("team-*", "team-"),
            ("*-dev", "web-dev"),
            ("a*b*c", "abc"),
            ("a*b*c", "a-long-b-and-c"),
            ("a*c", "abcbc"),
            ("**", "x"),
            ("Team-*", "team-b"),
        ];
        for (pattern, room) in matching {
            assert!(pattern_matches(pattern, room), "{pattern} should match {room}");
        }
        let refusing = [
            ("lobby", "lobby2"),
            ("lobby", "lobb"),
            ("team-*", "team"),
            ("team-*", "teams-a"),
            ("*-dev", "dev"),
            ("a*b*c", "acb"),
            ("", "a"),
            ("a*c", "abcb"),
        ];
        for (pattern, room) in refusing {
            assert!(!pattern_matches(pattern, room), "{pattern} should not match {room}");
        }
        assert!(any_pattern_matches(&["lobby", "team-*"], "team-x"));
        assert!(!any_pattern_matches::<&str>(&[], "lobby"));
    }
}
