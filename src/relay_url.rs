//! Where the chat socket connects: the page's own origin at `/ws`, unless a `relay` query
//! parameter names another relay. One build thus works behind `trunk serve`'s proxy, behind the
//! relay's own static serving and behind TLS.

/// The path the relay serves its socket on.
pub const SOCKET_PATH: &str = "/ws";

/// The socket URL for a page loaded with `page_protocol` (`"http:"` or `"https:"`, as
/// `location.protocol` reports it) from `page_host` (`location.host`, port included).
///
/// A non-blank `relay_override` (the `?relay=` query parameter) wins as given, so a page can talk
/// to any relay: `?relay=ws://127.0.0.1:5000/ws`.
#[must_use]
pub fn socket_url(page_protocol: &str, page_host: &str, relay_override: Option<&str>) -> String {
    if let Some(relay) = relay_override.map(str::trim).filter(|relay| !relay.is_empty()) {
        return relay.to_owned();
    }
    // A page served over TLS may only open TLS sockets (browsers block mixed content).
    let scheme = if page_protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{page_host}{SOCKET_PATH}")
}

/// The socket URL for the page this app runs in (see [`socket_url`]).
#[must_use]
pub fn for_current_page() -> String {
    let location = leptos::prelude::window().location();
    let relay_override = location
        .search()
        .ok()
        .and_then(|search| web_sys::UrlSearchParams::new_with_str(&search).ok())
        .and_then(|params| params.get("relay"));
    socket_url(
        &location.protocol().unwrap_or_default(),
        &location.host().unwrap_or_default(),
        relay_override.as_deref(),
    )
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

    /// `?relay=` points the page at any relay; a blank one is ignored.
    #[test]
    fn relay_parameter_overrides() {
        let relay = Some("ws://127.0.0.1:5000/ws");
        assert_eq!(socket_url("http:", "localhost:8080", relay), "ws://127.0.0.1:5000/ws");
        assert_eq!(socket_url("http:", "localhost:8080", Some("  ")), "ws://localhost:8080/ws");
    }
}
