//! Every way the relay ends a connection itself: the close code and reason the client reads, the
//! label it is counted under in `wschat_disconnects_total`, and whether the client should
//! reconnect. One catalogue, as centrifuge's `disconnect.go`, so that a code means one thing
//! wherever it is decided (the room, the reader, the writer) and a new one is added in one place.
//!
//! | close | code | reconnect | label |
//! |---|---|---|---|
//! | [`Close::Shutdown`] | 1001 going away | yes, to the next relay | `shutdown` (not counted) |
//! | [`Close::SlowConsumer`] | 1008 policy | yes, and catch up from history | `slow_consumer` |
//! | [`Close::Stalled`] | 1008 policy | yes, and catch up from history | `slow_consumer` |
//! | [`Close::TooBig`] | 1009 message too big | yes, without that message | `too_big` |
//! | [`Close::InvalidText`] | 1007 invalid payload | yes, without that frame | `invalid_text` |
//! | [`Close::Flood`] | 1008 policy | yes, after backing off | `flood` |
//! | [`Close::Strikes`] | 1008 policy | yes, after backing off | `strikes` |
//! | [`Close::NewEpoch`] | 1012 service restart | yes, at once: the welcome names the new epoch | `new_epoch` |
//! | [`Close::TokenExpired`] | 1008 policy | yes, with a fresh token (the same one gets 401) | `token_expired` |
//! | [`Close::Unresponsive`] | none (the peer is gone) | yes | `unresponsive` |
//!
//! Every one of them lets the client reconnect: none is a verdict on who the client is (that is
//! the handshake's business: 401, 403, 503), only on what one connection did. The page's retry
//! policy backs off on its own, which is what a flood or a strike close asks for.

use std::borrow::Cow;

use axum::extract::ws::{close_code, CloseFrame};

/// The longest reason a close frame holds: 125 bytes of payload, two of them the code.
const MAX_REASON_BYTES: usize = 123;

/// Why the relay closes a connection, with what it needs to say so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Close {
    /// The relay is shutting down.
    Shutdown,
    /// The client stopped reading: its outbound queue passed its byte bound.
    SlowConsumer,
    /// The client stopped reading: its socket took nothing for the stall timeout while frames
    /// waited for it.
    Stalled,
    /// It sent a frame or message over the size limit (`limit` bytes): refused at the frame's
    /// header, before its payload is read.
    TooBig {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It sent a text frame that is not UTF-8.
    InvalidText,
    /// It kept sending faster than the rate (`per_second`) for too long.
    Flood {
        /// The rate, in messages per second.
        per_second: f64,
    },
    /// It sent this many refused frames in a row.
    Strikes {
        /// How many.
        strikes: u32,
    },
    /// The history restarted in a new epoch: a v1 client must reconnect to learn it.
    NewEpoch,
    /// Its token expired (with `--jwt-secret`): the connection lasts no longer than the token.
    TokenExpired,
    /// Nothing came back from the client, not even a pong, for too long. No close frame is
    /// sent: nobody would read it.
    Unresponsive,
}

impl Close {
    /// The close code (RFC 6455, 7.4.1), or `None` when no close frame is sent.
    #[must_use]
    pub fn code(self) -> Option<u16> {
        Some(match self {
            Self::Shutdown => close_code::AWAY,
            Self::SlowConsumer
            | Self::Stalled
            | Self::Flood { .. }
            | Self::Strikes { .. }
            | Self::TokenExpired => close_code::POLICY,
            Self::TooBig { .. } => close_code::SIZE,
            Self::InvalidText => close_code::INVALID,
            Self::NewEpoch => close_code::RESTART,
            Self::Unresponsive => return None,
        })
    }

    /// The reason sent with the code: what a person reading the page or a log should know.
    #[must_use]
    pub fn reason(self) -> Cow<'static, str> {
        match self {
            Self::Shutdown => "relay shutting down".into(),
            Self::SlowConsumer => {
                "outbound queue full: the client is not reading its messages".into()
            }
            Self::Stalled => {
                "nothing could be written for too long: the client is not reading".into()
            }
            Self::TooBig { limit } => format!("message too big: at most {limit} bytes").into(),
            Self::InvalidText => "text frames must be valid UTF-8".into(),
            Self::Flood { per_second } => {
                format!("sending faster than {per_second} messages per second for too long").into()
            }
            Self::Strikes { strikes } => format!("{strikes} refused frames in a row").into(),
            Self::NewEpoch => "the relay's history restarted in a new epoch: reconnect".into(),
            // Short and fixed: the page shows it, and may recognise it.
            Self::TokenExpired => "token expired".into(),
            Self::Unresponsive => "no answer to pings".into(),
        }
    }

    /// The label in `wschat_disconnects_total{kind=...}`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::SlowConsumer | Self::Stalled => "slow_consumer",
            Self::TooBig { .. } => "too_big",
            Self::InvalidText => "invalid_text",
            Self::Flood { .. } => "flood",
            Self::Strikes { .. } => "strikes",
            Self::NewEpoch => "new_epoch",
            Self::TokenExpired => "token_expired",
            Self::Unresponsive => "unresponsive",
        }
    }

    /// Whether the client should connect again. Every close the relay makes says yes (see the
    /// module's table); kept so that a close that must not be retried is decided here too.
    #[must_use]
    pub fn reconnect(self) -> bool {
        true
    }

    /// Whether the close counts in `wschat_disconnects_total`: every one but a shutdown, which
    /// closes every connection at once and says nothing about any of them.
    #[must_use]
    pub fn counted(self) -> bool {
        !matches!(self, Self::Shutdown)
    }

    /// The close frame to send, or `None` when none is sent. Its reason is cut to what fits a
    /// close frame (a frame that does not fit could not be sent, and the code would be lost).
    #[must_use]
    pub fn frame(self) -> Option<CloseFrame> {
        let code = self.code()?;
        let mut reason = self.reason().into_owned();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Some(CloseFrame { code, reason: reason.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every close frame fits in a control frame, even with the largest numbers a configuration
    /// can give, and carries the close's code.
    #[test]
    fn every_reason_fits_a_close_frame() {
        let closes = [
            Close::Shutdown,
            Close::SlowConsumer,
            Close::Stalled,
            Close::TooBig { limit: usize::MAX },
            Close::InvalidText,
            Close::Flood { per_second: f64::MAX },
            Close::Strikes { strikes: u32::MAX },
            Close::NewEpoch,
            Close::TokenExpired,
            Close::Unresponsive,
        ];
        for close in closes {
            let frame = close.frame();
            assert!(frame.as_ref().is_none_or(|frame| frame.reason.len() <= 123), "{close:?}");
            assert_eq!(frame.map(|frame| frame.code), close.code());
        }
    }
}
