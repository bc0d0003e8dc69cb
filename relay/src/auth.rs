//! Optional token auth at the handshake (`--jwt-secret`): HS256 JSON Web Tokens, so only holders
//! of a token signed by the deployment connect, and nobody can speak as someone else: the name on
//! their messages comes from the token, not from what the client writes.
//!
//! The token travels in the `token` query parameter (`/ws?token=...`), or, for clients that cannot
//! set the URL, as a subprotocol entry `wschat.token.<token>` beside `wschat.v1`.
//!
//! A token is checked as RFC 7519 asks: signature, `exp` (required) and `nbf` (when present), with
//! a minute of leeway for clocks that differ, and `aud` and `iss` when the relay is configured
//! with an audience or an issuer (a token for another service is then refused; without an
//! audience configured, a token that names one is refused too, as the RFC says). A connection
//! lasts only as long as its token: the relay closes it when the token expires.
//!
//! Rooms. A token may also say which rooms its holder may join (`rooms`) and post in (`post`),
//! each a list of name patterns in which `*` stands for any run of characters (see
//! `wschat_protocol::rooms::pattern_matches`), e.g. `{"rooms": ["lobby", "team-*"], "post":
//! ["team-*"]}`. Without `rooms`, every room is open to it; without `post`, it may post wherever
//! it may join. Without `--jwt-secret`, every room is open to everyone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use axum::http::{HeaderMap, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use wschat_protocol::rooms::any_pattern_matches;

/// The prefix of the subprotocol entry that carries a token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "wschat.token.";

/// How far the relay's clock and the token issuer's may differ: a token is accepted this long
/// past its `exp` and before its `nbf` (jsonwebtoken's default, stated here because the
/// connection's end is computed from it too).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What a token says about its holder.
#[derive(Debug, Deserialize)]
struct Claims {
    /// The holder's id; their display name when `name` is absent.
    sub: String,
    /// The holder's display name.
    #[serde(default)]
    name: Option<String>,
    /// When the token expires, in seconds since the Unix epoch.
    exp: u64,
    /// Patterns of the rooms the holder may join; absent: all.
    #[serde(default)]
    rooms: Option<Vec<String>>,
    /// Patterns of the rooms the holder may post in; absent: those it may join.
    #[serde(default)]
    post: Option<Vec<String>>,
}

/// Which rooms a connection may join and post in. The default (no token) opens every room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Patterns of the rooms it may join; `None`: all.
    pub join: Option<Vec<String>>,
    /// Patterns of the rooms it may post in; `None`: those it may join.
    pub post: Option<Vec<String>>,
}

impl Grants {
    /// Whether it may join `room` (a room name as `room_name` spells it).
    #[must_use]
    pub fn may_join(&self, room: &str) -> bool {
        self.join.as_ref().is_none_or(|patterns| any_pattern_matches(patterns, room))
    }

    /// Whether it may post in `room`.
    #[must_use]
    pub fn may_post(&self, room: &str) -> bool {
        match &self.post {
            Some(patterns) => any_pattern_matches(patterns, room),
            None => self.may_join(room),
        }
    }
}

/// Whom a valid token names, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name the holder speaks as.
    pub name: String,
    /// When the token stops being accepted (its `exp` plus the allowed clock skew); `None` when
    /// that is past what the clock can hold. The connection is closed then.
    pub valid_until: Option<SystemTime>,
    /// The rooms it opens.
    pub grants: Grants,
}

/// Why a handshake was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token in the query or the subprotocols.
    #[error("no token: pass one as ?token= or as the subprotocol wschat.token.<token>")]
    Missing,
    /// A token that does not verify: bad signature, expired, malformed.
    #[error("the token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Verifies tokens signed with one shared secret.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("Authenticator { HS256 }")
    }
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`; `exp` and `sub` are required, and
    /// so are `aud` and `iss` when an `audience` or an `issuer` is given (the token's must match).
    #[must_use]
    pub fn new(secret: &str, audience: Option<&str>, issuer: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW.as_secs();
        if let Some(audience) = audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// Whom the handshake's token names, and until when it is valid.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a token, [`AuthError::Invalid`] for one that does not verify.
    pub fn identify(&self, uri: &Uri, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let token = token_in_query(uri)
            .or_else(|| token_in_protocols(headers))
            .ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(&token, &self.key, &self.validation)?.claims;
        let valid_until = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .and_then(|exp| exp.checked_add(CLOCK_SKEW));
        let name = claims.name.filter(|name| !name.trim().is_empty()).unwrap_or(claims.sub);
        let grants = Grants { join: claims.rooms, post: claims.post };
        Ok(Identity { name, valid_until, grants })
    }
}

fn token_in_query(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        // JWTs are base64url and dots: nothing to percent-decode.
        (!value.is_empty()).then(|| value.to_owned())
    })
}

fn token_in_protocols(headers: &HeaderMap) -> Option<String> {
    headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().find_map(|value| {
        value.to_str().ok()?.split(',').find_map(|protocol| {
            protocol.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX).map(str::to_owned)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(join: Option<&[&str]>, post: Option<&[&str]>) -> Grants {
        let list = |patterns: &[&str]| patterns.iter().map(|p| (*p).to_owned()).collect();
        Grants { join: join.map(list), post: post.map(list) }
    }

    /// Without claims every room is open; `rooms` limits joining, `post` limits posting, and
    /// without `post` a holder posts wherever it may join.
    #[test]
    fn grants_follow_the_claims() {
        let open = Grants::default();
        assert!(open.may_join("anything") && open.may_post("anything"));
        let team = grants(Some(&["lobby", "team-*"]), None);
        assert!(team.may_join("team-a") && team.may_post("team-a"));
        assert!(!team.may_join("secret") && !team.may_post("secret"));
        let reader = grants(Some(&["*"]), Some(&["team-*"]));
        assert!(reader.may_join("lobby") && !reader.may_post("lobby"));
        assert!(reader.may_post("team-b"));
        let nothing = grants(Some(&[]), None);
        assert!(!nothing.may_join("lobby") && !nothing.may_post("lobby"));
    }
}
