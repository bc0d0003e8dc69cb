//! The HAProxy configuration the tests run: the sample `deploy/haproxy.cfg` itself, bound to a
//! loopback port of the test's and balancing over the test's relays, so that the tests exercise
//! what a deployment starts from. Shared by the relay's Redis tests and by xtask's end-to-end
//! failover scenario (`xtask/src/nodes.rs` includes this file by its path); std only.

use std::net::SocketAddr;

/// `sample` (the text of `deploy/haproxy.cfg`) with its `bind` on 127.0.0.1:`port`, its `balance`
/// replaced when `balance` names another, its `server` lines replaced by one per relay, each with
/// the sample's check settings (`check inter 1s fall 2 rise 2`, ...), and `maxconn` at 1,000.
///
/// # Panics
/// When the sample no longer has exactly one `bind`, one `balance` and some `server` lines: the
/// tests must follow the sample, so changing its shape means changing this too.
pub fn haproxy_config(
    sample: &str,
    port: u16,
    relays: &[SocketAddr],
    balance: Option<&str>,
) -> String {
    let mut config = String::new();
    let (mut binds, mut balances, mut servers) = (0, 0, 0);
    for line in sample.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["bind", ..] => {
                binds += 1;
                config.push_str(&format!("    bind 127.0.0.1:{port}\n"));
            }
            // The sample's 20,000 need twice as many open files as a test machine may allow.
            ["maxconn", _] => config.push_str("    maxconn 1000\n"),
            ["balance", sample_balance] => {
                balances += 1;
                config.push_str(&format!("    balance {}\n", balance.unwrap_or(sample_balance)));
            }
            // `server NAME ADDRESS SETTINGS...`: the test's relays take the place of the first.
            ["server", _, _, settings @ ..] => {
                servers += 1;
                if servers == 1 {
                    for (n, relay) in relays.iter().enumerate() {
                        let settings = settings.join(" ");
                        config.push_str(&format!("    server relay{n} {relay} {settings}\n"));
                    }
                }
            }
            _ => {
                config.push_str(line);
                config.push('\n');
            }
        }
    }
    assert!(
        binds == 1 && balances == 1 && servers > 0,
        "deploy/haproxy.cfg changed shape: {binds} bind, {balances} balance, {servers} server lines"
    );
    config
}
