//! Which browser pages may use the relay: the `Host` check against DNS rebinding, and the
//! `Origin` check against cross-site WebSocket hijacking.
//!
//! **Host.** An attacker's page at `http://evil.example:5000` can point `evil.example` at the
//! relay's address once the page has loaded (DNS rebinding): the browser then sends the relay
//! requests that are "same origin" with the attacker's page, naming `evil.example` in both `Host`
//! and `Origin`. So every request (but `/healthz`) must name a host the relay serves: `localhost`,
//! an IP address (a literal address cannot be rebound, and the relay may listen on any of the
//! machine's), a name given with `--allow-host`, or the host of an `--allow-origin` entry (a site
//! trusted with the socket is trusted with its name). `--allow-host '*'` turns the check off.
//! Behind a reverse proxy that passes `Host` on, the public name must be allowed; a proxy that
//! does not pass it on makes every request name the relay's own address, which passes. A relay
//! that serves TLS itself needs no Host check: a browser sent to it under another name refuses
//! its certificate before any request is made.
//!
//! **Origin.** A browser always sends `Origin` with a WebSocket handshake; other clients (the
//! tutorial's Node client, command-line tools) usually send none and pass, as in Centrifugo. A
//! browser's handshake passes when its origin is the relay's own page, or is on the allowlist,
//! or the allowlist holds `*`. Origins are compared as browsers define them (RFC 6454): scheme,
//! host and port. The relay's own origin is `http://` plus the `Host` it was asked for, or
//! `https://` when it serves TLS itself; so behind a TLS-terminating proxy, whose pages are
//! `https://`, the page's origin must be allowed with `--allow-origin https://NAME` (which also
//! allows the host).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use axum::http::header::{HOST, ORIGIN};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, Uri};

/// The origins allowed by default besides the relay's own: the dev servers' (`trunk serve` on
/// 8080, and the tutorial's Angular dev server on 4200), under both loopback names.
#[must_use]
pub fn default_allowlist() -> Vec<String> {
    [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://127.0.0.1:4200",
        "http://localhost:4200",
    ]
    .map(str::to_owned)
    .into()
}

/// Why an `--allow-origin` or `--allow-host` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// Not `*` nor `http(s)://host[:port]`.
    #[error(
        "{0:?} is not an origin: give `http://` or `https://`, a host and perhaps a port, and \
         nothing after it (e.g. https://chat.example.org), or `*` for any"
    )]
    Origin(String),
    /// `null` is the origin of sandboxed frames and local files, which any site can make.
    #[error("\"null\" is the origin any site can give its pages (sandboxed frames): use `*` if you really mean any")]
    NullOrigin,
    /// Not `*` nor a bare host name or address.
    #[error(
        "{0:?} is not a host name: give the name alone (e.g. chat.example.org), or `*` for any"
    )]
    Host(String),
}

/// Checks an `--allow-origin` entry, and returns it as it will be compared.
///
/// # Errors
/// What is wrong with it.
pub fn allowed_origin(entry: &str) -> Result<String, AllowlistError> {
    let entry = entry.trim();
    if entry == "*" {
        return Ok(entry.to_owned());
    }
    if entry.eq_ignore_ascii_case("null") {
        return Err(AllowlistError::NullOrigin);
    }
    let origin = Origin::parse(entry).ok_or_else(|| AllowlistError::Origin(entry.to_owned()))?;
    Ok(origin.to_string())
}

/// Checks an `--allow-host` entry, and returns it as it will be compared.
///
/// # Errors
/// What is wrong with it.
pub fn allowed_host(entry: &str) -> Result<String, AllowlistError> {
    let entry = entry.trim();
    if entry == "*" {
        return Ok(entry.to_owned());
    }
    match entry.parse::<Authority>() {
        Ok(authority) if authority.as_str() == authority.host() && !entry.is_empty() => {
            Ok(normalize_host(authority.host()))
        }
        _ => Err(AllowlistError::Host(entry.to_owned())),
    }
}

/// A web origin (RFC 6454): scheme, host and port, the port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    secure: bool,
    /// Lower case, without a trailing dot; an IPv6 address in brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// Parses an origin as browsers send it: `http(s)://host[:port]`, nothing after it (a
    /// trailing `/` is tolerated, for hand-written allowlist entries).
    fn parse(text: &str) -> Option<Self> {
        let uri: Uri = text.parse().ok()?;
        let secure = match uri.scheme()? {
            scheme if *scheme == Scheme::HTTPS => true,
            scheme if *scheme == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        let bare = authority.as_str().len() == authority.host().len() + port_suffix(authority);
        let no_path = uri.path_and_query().is_none_or(|path| path.as_str() == "/");
        if !bare || !no_path || authority.host().is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Some(Self { secure, host: normalize_host(authority.host()), port })
    }

    /// The host of this origin as a bare name (what `Host` would say).
    fn host(&self) -> &str {
        &self.host
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, default) = if self.secure { ("https", 443) } else { ("http", 80) };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != default {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The length of `:port` in an authority, 0 without one.
fn port_suffix(authority: &Authority) -> usize {
    authority.port().map_or(0, |port| port.as_str().len() + 1)
}

/// Host names compare without case and without the trailing dot of a fully qualified name.
fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// The host a `Host` header names (`name[:port]`), normalized; `None` when it is no host.
fn host_of(named: &str) -> Option<String> {
    let authority: Authority = named.parse().ok()?;
    // No user info (`user@host`) in a Host header.
    let bare = authority.as_str().len() == authority.host().len() + port_suffix(&authority);
    (bare && !authority.host().is_empty()).then(|| normalize_host(authority.host()))
}

/// Whether `host` (normalized) is an IP address, v4 or v6 in brackets.
fn is_address(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|host| host.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok(),
    }
}

/// The relay's rules for browsers, built once from the settings.
#[derive(Debug)]
pub struct BrowserPolicy {
    any_origin: bool,
    origins: Vec<Origin>,
    any_host: bool,
    /// `--allow-host` names and the hosts of `--allow-origin` entries.
    hosts: HashSet<String>,
    /// Whether the relay's own pages are `https://`: it serves TLS itself.
    secure: bool,
}

impl BrowserPolicy {
    /// The policy for these allowlists; `secure` when the relay serves TLS itself (its
    /// certificate then vouches for the names browsers reach it under, so any host passes).
    ///
    /// # Errors
    /// The first entry that cannot be used.
    pub fn new(
        allowed_origins: &[String],
        allowed_hosts: &[String],
        secure: bool,
    ) -> Result<Self, AllowlistError> {
        let mut policy = Self {
            any_origin: false,
            origins: Vec::new(),
            any_host: secure,
            hosts: HashSet::from(["localhost".to_owned()]),
            secure,
        };
        for entry in allowed_origins {
            let entry = allowed_origin(entry)?;
            match Origin::parse(&entry) {
                Some(origin) => {
                    policy.hosts.insert(origin.host().to_owned());
                    policy.origins.push(origin);
                }
                None => policy.any_origin = true,
            }
        }
        for entry in allowed_hosts {
            match allowed_host(entry)?.as_str() {
                "*" => policy.any_host = true,
                host => {
                    policy.hosts.insert(host.to_owned());
                }
            }
        }
        Ok(policy)
    }

    /// Checks the host a request names (`Host`, or the authority of an absolute URI). A request
    /// naming none is not from a browser, and passes.
    ///
    /// # Errors
    /// What it named, for the log.
    pub fn check_host(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), String> {
        if self.any_host {
            return Ok(());
        }
        let named = match (headers.get(HOST), uri.authority()) {
            (Some(host), _) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
            (None, Some(authority)) => authority.as_str().to_owned(),
            (None, None) => return Ok(()),
        };
        match host_of(&named) {
            Some(host) if is_address(&host) || self.hosts.contains(&host) => Ok(()),
            _ => Err(named),
        }
    }

    /// Checks a handshake's `Origin` (with its `Host`, which [`Self::check_host`] passed).
    ///
    /// # Errors
    /// The origin sent, for the log.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(sent) = headers.get(ORIGIN) else { return Ok(()) };
        if self.any_origin {
            return Ok(());
        }
        let refused = || String::from_utf8_lossy(sent.as_bytes()).into_owned();
        let origin = sent.to_str().ok().and_then(Origin::parse).ok_or_else(refused)?;
        if self.origins.contains(&origin) || self.own_origin(headers).as_ref() == Some(&origin) {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// The origin of the relay's own pages, as this request reached it.
    fn own_origin(&self, headers: &HeaderMap) -> Option<Origin> {
        let host = headers.get(HOST)?.to_str().ok()?;
        let scheme = if self.secure { "https" } else { "http" };
        Origin::parse(&format!("{scheme}://{host}"))
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

    fn policy(origins: &[&str], hosts: &[&str]) -> BrowserPolicy {
        let strings =
            |list: &[&str]| list.iter().map(|&entry| entry.to_owned()).collect::<Vec<_>>();
        BrowserPolicy::new(&strings(origins), &strings(hosts), false).unwrap()
    }

    fn host_passes(policy: &BrowserPolicy, host: &str) -> bool {
        policy.check_host(&headers(None, host), &Uri::from_static("/ws")).is_ok()
    }

    /// Allowlist entries are compared as browsers write origins: lower case, default ports left
    /// out; anything else is refused at start with the reason.
    #[test]
    fn allowlist_entries_are_origins() {
        assert_eq!(allowed_origin("HTTP://LocalHost:4200/").unwrap(), "http://localhost:4200");
        assert_eq!(
            allowed_origin("https://chat.example.org:443").unwrap(),
            "https://chat.example.org"
        );
        assert_eq!(allowed_origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(allowed_origin("*").unwrap(), "*");
        assert_eq!(allowed_origin("null"), Err(AllowlistError::NullOrigin));
        for bad in [
            "chat.example.org",
            "https://chat.example.org/app",
            "https://chat.example.org?x",
            "https://user@chat.example.org",
            "ws://chat.example.org",
            "file:///home",
            "https://",
            "",
        ] {
            assert!(matches!(allowed_origin(bad), Err(AllowlistError::Origin(_))), "{bad:?}");
        }
    }

    /// `--allow-host` takes a bare name or address, or `*`.
    #[test]
    fn allowed_hosts_are_bare_names() {
        assert_eq!(allowed_host("Chat.Example.Org.").unwrap(), "chat.example.org");
        assert_eq!(allowed_host("[::1]").unwrap(), "[::1]");
        assert_eq!(allowed_host("*").unwrap(), "*");
        for bad in ["https://chat.example.org", "chat.example.org:443", "a@b", "", "a/b"] {
            assert!(allowed_host(bad).is_err(), "{bad:?}");
        }
    }

    /// By default the relay answers to `localhost` and to IP addresses (with any port), and to
    /// no other name: a name pointed at it by someone else (DNS rebinding) is refused.
    #[test]
    fn hosts_by_default() {
        let policy = policy(&[], &[]);
        for host in [
            "localhost:5000",
            "LOCALHOST",
            "localhost.:5000",
            "127.0.0.1:5000",
            "10.1.2.3",
            "[::1]:5000",
        ] {
            assert!(host_passes(&policy, host), "{host}");
        }
        for host in
            ["evil.example:5000", "localhost.evil.example", "127.0.0.1.nip.io", "user@localhost"]
        {
            assert!(!host_passes(&policy, host), "{host}");
        }
        // A request naming no host at all is not from a browser.
        assert!(policy.check_host(&HeaderMap::new(), &Uri::from_static("/")).is_ok());
    }

    /// Names given with `--allow-host`, and the hosts of allowed origins, are served too; `*`
    /// serves any.
    #[test]
    fn allowed_hosts_and_origin_hosts() {
        let policy = policy(&["https://partner.example"], &["chat.example.org"]);
        for host in ["chat.example.org", "Chat.Example.Org:8080", "partner.example"] {
            assert!(host_passes(&policy, host), "{host}");
        }
        assert!(!host_passes(&policy, "evil.example"));
        assert!(host_passes(&self::policy(&[], &["*"]), "evil.example"));
    }

    /// Non-browser clients (no Origin) pass; so do the relay's own pages (same scheme, host and
    /// port) and the dev servers.
    #[test]
    fn own_dev_and_originless_pass() {
        let policy =
            policy(&default_allowlist().iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(policy.check_origin(&headers(None, "chat.example.org")), Ok(()));
        let own = headers(Some("http://chat.example.org"), "chat.example.org");
        assert_eq!(policy.check_origin(&own), Ok(()));
        let own_port = headers(Some("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(policy.check_origin(&own_port), Ok(()));
        for dev in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://localhost:4200",
            "http://127.0.0.1:4200",
        ] {
            assert_eq!(policy.check_origin(&headers(Some(dev), "localhost:5000")), Ok(()), "{dev}");
        }
    }

    /// An origin differs from the relay's own by scheme or by port: an `https://` page is not the
    /// plain relay's own, nor is a page on another port; a relay serving TLS is `https://`.
    #[test]
    fn origins_differ_by_scheme_and_port() {
        let plain = policy(&[], &[]);
        for origin in ["https://chat.example.org", "http://chat.example.org:8080"] {
            let handshake = headers(Some(origin), "chat.example.org");
            assert_eq!(plain.check_origin(&handshake), Err(origin.to_owned()), "{origin}");
        }
        let tls = BrowserPolicy::new(&[], &[], true).unwrap();
        let page = headers(Some("https://chat.example.org"), "chat.example.org");
        assert_eq!(
            tls.check_host(&page, &Uri::from_static("/ws")),
            Ok(()),
            "the certificate vouches"
        );
        assert_eq!(tls.check_origin(&page), Ok(()));
        let plain_page = headers(Some("http://chat.example.org"), "chat.example.org");
        assert!(tls.check_origin(&plain_page).is_err());
    }

    /// Another site's page is refused, even one whose name contains the relay's, and the `null`
    /// origin any site can give a sandboxed frame.
    #[test]
    fn other_sites_are_refused() {
        let policy = policy(&[], &[]);
        for origin in ["https://evil.example", "https://chat.example.org.evil.example", "null"] {
            let handshake = headers(Some(origin), "chat.example.org");
            assert_eq!(policy.check_origin(&handshake), Err(origin.to_owned()), "{origin}");
        }
    }

    /// The allowlist adds origins; `*` allows every origin.
    #[test]
    fn the_allowlist_and_the_wildcard() {
        let partner = headers(Some("https://partner.example"), "chat.example.org");
        assert!(policy(&[], &[]).check_origin(&partner).is_err());
        assert!(policy(&["https://partner.example"], &[]).check_origin(&partner).is_ok());
        assert!(policy(&["http://partner.example"], &[]).check_origin(&partner).is_err());
        assert!(policy(&["*"], &[]).check_origin(&partner).is_ok());
    }
}
