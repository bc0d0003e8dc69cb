//! Where the chat socket connects: the page's own origin at `/ws`, unless a `relay` query
//! parameter names another relay. One build thus works behind `trunk serve`'s proxy, behind the
//! relay's own static serving and behind TLS. A `token` query parameter (for a relay started with
//! `--jwt-secret`) is passed on to the socket.
//!
//! Debug builds (under `trunk serve`) default to the relay on the tutorial's port instead
//! (`WSCHAT_DEV_RELAY` in `.cargo/config.toml`): Trunk's WebSocket proxy does not pass the
//! `wschat.v1` subprotocol on, so the page talks to the relay directly, which allows the dev
//! server's origin.

/// The path the relay serves its socket on.
pub const SOCKET_PATH: &str = "/ws";

/// The socket URL for a page loaded with `page_protocol` (`"http:"` or `"https:"`, as
/// `location.protocol` reports it) from `page_host` (`location.host`, port included).
///
/// A non-blank `relay_override` (the `?relay=` query parameter) wins as given, so a page can talk
/// to any relay: `?relay=ws://127.0.0.1:5000/ws`, or to the first of several that answers, in
/// turn: `?relay=wss://a.example.org/ws,wss://b.example.org/ws` (see [`nth`]).
#[must_use]
pub fn socket_url(page_protocol: &str, page_host: &str, relay_override: Option<&str>) -> String {
    if let Some(relay) = relay_override.map(str::trim).filter(|relay| !relay.is_empty()) {
        return relay.to_owned();
    }
    // A page served over TLS may only open TLS sockets (browsers block mixed content).
    let scheme = if page_protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{page_host}{SOCKET_PATH}")
}

/// `url` with the auth `token` added as its `token` query parameter.
#[must_use]
pub fn with_token(url: &str, token: Option<&str>) -> String {
    match token.map(str::trim).filter(|token| !token.is_empty()) {
        None => url.to_owned(),
        Some(token) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            // JWTs are base64url and dots, which need no escaping; anything else is escaped.
            let token: String = token
                .bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        char::from(byte).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect();
            format!("{url}{separator}token={token}")
        }
    }
}

/// The relays in `urls`, separated by commas (blanks ignored), in turn: the `n`th, counting
/// round.
#[must_use]
pub fn nth(urls: &str, n: usize) -> &str {
    let each = urls.split(',').map(str::trim).filter(|url| !url.is_empty());
    let count = each.clone().count().max(1);
    each.clone().nth(n % count).unwrap_or(urls)
}

/// The socket URL for the page this app runs in (see [`socket_url`]), or several separated by
/// commas, each with the page's token.
#[must_use]
pub fn for_current_page() -> String {
    let location = leptos::prelude::window().location();
    let parameter = crate::address::parameter;
    let dev_relay = if cfg!(debug_assertions) { option_env!("WSCHAT_DEV_RELAY") } else { None };
    let relay = parameter("relay").or_else(|| dev_relay.map(str::to_owned));
    let url = socket_url(
        &location.protocol().unwrap_or_default(),
        &location.host().unwrap_or_default(),
        relay.as_deref(),
    );
    let token = parameter("token");
    let mut urls = String::new();
    for url in url.split(',') {
        if !urls.is_empty() {
            urls.push(',');
        }
        urls.push_str(&with_token(url.trim(), token.as_deref()));
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::socket_url;

    /// Behind `trunk serve` (or the relay's static serving) the socket is on the page's own host.
    #[test]
    fn plain_page_uses_ws_on_its_own_host() {
        assert_eq!(socket_url("http:", "127.0.0.1:8080", None), "ws://127.0.0.1:8080/ws");
    }

    /// A page served over TLS connects with `wss://`, keeping its port.
    #[test]
    fn tls_page_uses_wss() {
        assert_eq!(socket_url("https:", "chat.example.org", None), "wss://chat.example.org/ws");
        assert_eq!(socket_url("https:", "example.org:8443", None), "wss://example.org:8443/ws");
    }

    /// `?token=` is passed on to the socket, escaped where needed; no token, no parameter.
    #[test]
    fn the_token_goes_along() {
        use super::with_token;
        assert_eq!(with_token("ws://h/ws", Some("a.b-c_d")), "ws://h/ws?token=a.b-c_d");
        assert_eq!(with_token("ws://h/ws?x=1", Some("t")), "ws://h/ws?x=1&token=t");
        assert_eq!(with_token("ws://h/ws", Some("a b&c")), "ws://h/ws?token=a%20b%26c");
        assert_eq!(with_token("ws://h/ws", None), "ws://h/ws");
        assert_eq!(with_token("ws://h/ws", Some(" ")), "ws://h/ws");
    }

    /// Several relays, separated by commas, are tried in turn; blanks between commas are ignored.
    #[test]
    fn several_relays_are_tried_in_turn() {
        use super::nth;
        assert_eq!(nth("ws://a/ws", 0), "ws://a/ws");
        assert_eq!(nth("ws://a/ws", 3), "ws://a/ws");
        let two = "ws://a/ws, ws://b/ws,,";
        let turns: Vec<&str> = (0..4).map(|n| nth(two, n)).collect();
        assert_eq!(turns, ["ws://a/ws", "ws://b/ws", "ws://a/ws", "ws://b/ws"]);
        assert_eq!(nth("", 1), "");
    }

    /// `?relay=` points the page at any relay; a blank one is ignored.
    #[test]
    fn relay_parameter_overrides() {
        let relay = Some("ws://127.0.0.1:5000/ws");
        assert_eq!(socket_url("http:", "localhost:8080", relay), "ws://127.0.0.1:5000/ws");
        assert_eq!(socket_url("http:", "localhost:8080", Some("  ")), "ws://localhost:8080/ws");
    }
}
