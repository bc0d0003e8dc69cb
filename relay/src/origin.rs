//! The Origin check at the handshake, against cross-site WebSocket hijacking: a page on another
//! site must not be able to open a socket to the relay from a visitor's browser.
//!
//! A browser always sends `Origin` with a WebSocket handshake; other clients (the tutorial's
//! Node client, command-line tools) usually send none, and pass, as in Centrifugo. A browser's
//! handshake passes when its origin is the relay's own (the host it asked for, so the relay's
//! `--static` app and any proxy in front that keeps the `Host` header work with no set-up), or is
//! on the allowlist, or the allowlist holds `*`.

use axum::http::header::{HOST, ORIGIN};
use axum::http::HeaderMap;

/// The origins allowed by default besides the relay's own: the dev server's (`trunk serve`).
#[must_use]
pub fn default_allowlist() -> Vec<String> {
    vec!["http://127.0.0.1:8080".to_owned(), "http://localhost:8080".to_owned()]
}

/// Checks the handshake's `Origin`.
///
/// # Errors
/// The refused origin, for the log.
pub fn check(headers: &HeaderMap, allowlist: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    if allowlist.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    // Same origin: `scheme://host[:port]` whose host part is what the client asked for.
    let host = headers.get(HOST).and_then(|host| host.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (host, origin_host) {
        (Some(host), Some(origin_host)) if host.eq_ignore_ascii_case(origin_host) => Ok(()),
        _ => Err(origin.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    /// Non-browser clients (no Origin) pass; so do the relay's own pages and the dev server.
    #[test]
    fn own_dev_and_originless_pass() {
        let allow = default_allowlist();
        assert_eq!(check(&headers(None, "chat.example.org"), &allow), Ok(()));
        let own = headers(Some("https://chat.example.org"), "chat.example.org");
        assert_eq!(check(&own, &allow), Ok(()));
        let dev = headers(Some("http://127.0.0.1:8080"), "127.0.0.1:5000");
        assert_eq!(check(&dev, &allow), Ok(()));
    }

    /// Another site's page is refused, even one whose name contains the relay's.
    #[test]
    fn other_sites_are_refused() {
        let allow = default_allowlist();
        for origin in ["https://evil.example", "https://chat.example.org.evil.example", "null"] {
            let handshake = headers(Some(origin), "chat.example.org");
            assert_eq!(check(&handshake, &allow), Err(origin.to_owned()), "{origin}");
        }
    }

    /// The allowlist adds origins; `*` allows every origin.
    #[test]
    fn the_allowlist_and_the_wildcard() {
        let partner = headers(Some("https://partner.example"), "chat.example.org");
        assert!(check(&partner, &default_allowlist()).is_err());
        assert!(check(&partner, &["https://partner.example".to_owned()]).is_ok());
        assert!(check(&partner, &["*".to_owned()]).is_ok());
    }
}
