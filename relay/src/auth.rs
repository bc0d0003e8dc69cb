//! Optional token auth at the handshake (`--jwt-secret`): HS256 JSON Web Tokens, so only holders
//! of a token signed by the deployment connect, and nobody can speak as someone else: the name on
//! their messages comes from the token, not from what the client writes.
//!
//! The token travels in the `token` query parameter (`/ws?token=...`), or, for clients that cannot
//! set the URL, as a subprotocol entry `wschat.token.<token>` beside `wschat.v1`.

use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use axum::http::{HeaderMap, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The prefix of the subprotocol entry that carries a token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "wschat.token.";

/// What a token says about its holder.
#[derive(Debug, Deserialize)]
struct Claims {
    /// The holder's id; their display name when `name` is absent.
    sub: String,
    /// The holder's display name.
    #[serde(default)]
    name: Option<String>,
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
    /// An authenticator for HS256 tokens signed with `secret`; `exp` is required.
    #[must_use]
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// The name the handshake's holder speaks as.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a token, [`AuthError::Invalid`] for one that does not verify.
    pub fn identify(&self, uri: &Uri, headers: &HeaderMap) -> Result<String, AuthError> {
        let token = token_in_query(uri)
            .or_else(|| token_in_protocols(headers))
            .ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(&token, &self.key, &self.validation)?.claims;
        Ok(claims.name.filter(|name| !name.trim().is_empty()).unwrap_or(claims.sub))
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
