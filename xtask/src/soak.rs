//! `cargo xtask soak`: a benchmark, not a test. Two tabs of the release build in Chromium; tab A
//! sends 1,000 messages while the relay (with `--data-dir`) is killed and restarted 5 times; then
//! it counts what tab B shows: lost, duplicated and out-of-order messages (the goal is 0 / 0 / 0),
//! and how long the tabs took to reconnect after each restart.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::json;

use crate::e2e::{self, Browser, Session, Tabs};

const MESSAGES: usize = 1000;
const RESTARTS: usize = 5;
/// Messages typed at once: well under the outbox's 100 undelivered, even with one batch in
/// flight when the relay dies and the next one typed while it is down.
const BATCH: usize = 40;

/// Runs the soak and prints its figures.
///
/// # Errors
/// When the browser or the relay cannot be driven; the counts themselves are reported, not judged.
pub fn run(dist: &Path) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("wschat-soak-{}", std::process::id()));
    // The rate limit is lifted: a script typing 1,000 messages is a flood by the relay's default
    // rules (10 a second, closed after 30 s held back), and the soak is about restarts.
    let relay_args = vec![
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--rate".to_owned(),
        "100000".to_owned(),
        "--burst".to_owned(),
        "100000".to_owned(),
    ];
    let outcome = e2e::block_on(async {
        let mut session = Session::start_with(Browser::Chromium, dist, relay_args).await?;
        let outcome = soak(&mut session).await;
        session.close().await?;
        outcome
    });
    // Best effort: a leftover directory in /tmp harms nothing.
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

async fn soak(session: &mut Session) -> anyhow::Result<()> {
    let Tabs { a, b, .. } = e2e::open_two_tabs(session).await?;
    let started = Instant::now();
    let restart_every = MESSAGES / (RESTARTS + 1);
    let mut reconnect_times = Vec::new();
    let mut sent = 0;
    while sent < MESSAGES {
        let batch = BATCH.min(MESSAGES - sent);
        type_batch(&session.client, sent, batch).await?;
        sent += batch;
        if reconnect_times.len() < RESTARTS && sent >= restart_every * (reconnect_times.len() + 1) {
            // Killed with the batch still in flight; the next batch is typed while it is down.
            session.stop_relay();
            if sent < MESSAGES {
                let next = BATCH.min(MESSAGES - sent);
                type_batch(&session.client, sent, next).await?;
                sent += next;
            }
            session.start_relay()?;
            let back = Instant::now();
            for tab in [&a, &b] {
                session.client.switch_to_window(tab.clone()).await?;
                e2e::wait_for_status(&session.client, "connected").await?;
            }
            reconnect_times.push(back.elapsed());
            session.client.switch_to_window(a.clone()).await?;
        }
        wait_until_few_waiting(&session.client).await?;
    }
    wait_until_all_delivered(&session.client).await?;
    let typing = started.elapsed();

    session.client.switch_to_window(b).await?;
    // Let the last deliveries land; the count is polled until it stops growing.
    let received = settle(&session.client).await?;
    report(&received, &reconnect_times, typing);
    Ok(())
}

/// Types `count` messages "soak N" into tab A's composer, each sent with Enter.
async fn type_batch(client: &Client, from: usize, count: usize) -> anyhow::Result<()> {
    let script = "const [from, count] = arguments;
        const box = document.querySelector('[data-testid=composer]');
        for (let n = from; n < from + count; n++) {
            box.value = 'soak ' + n;
            box.dispatchEvent(new Event('input', {bubbles: true}));
            box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true}));
        }";
    client.execute(script, vec![json!(from), json!(count)]).await?;
    Ok(())
}

/// How many of tab A's messages are not delivered yet.
async fn waiting(client: &Client) -> anyhow::Result<usize> {
    let script = "return document.querySelectorAll(
        '[data-testid=sent-list] > li:not([data-state=delivered])').length;";
    Ok(serde_json::from_value(client.execute(script, vec![]).await?)?)
}

async fn wait_until_few_waiting(client: &Client) -> anyhow::Result<()> {
    e2e::poll("tab A's outbox to drain", || waiting(client), |&count| count < BATCH)
        .await
        .map(|_| ())
}

async fn wait_until_all_delivered(client: &Client) -> anyhow::Result<()> {
    e2e::poll("every message to be delivered", || waiting(client), |&count| count == 0)
        .await
        .map(|_| ())
}

/// Tab B's received contents once their count has stopped growing for a second.
async fn settle(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut last = usize::MAX;
    loop {
        let received: Vec<String> = e2e::list(client, "received-list")
            .await?
            .into_iter()
            .map(|(_, content)| content)
            .collect();
        if received.len() == last {
            return Ok(received);
        }
        last = received.len();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn report(received: &[String], reconnect_times: &[Duration], typing: Duration) {
    let numbers: Vec<usize> =
        received.iter().filter_map(|content| content.strip_prefix("soak ")?.parse().ok()).collect();
    let unique: HashSet<_> = numbers.iter().copied().collect();
    let lost = (0..MESSAGES).filter(|n| !unique.contains(n)).count();
    let duplicated = numbers.len() - unique.len();
    let out_of_order = numbers.windows(2).filter(|pair| pair[1] < pair[0]).count();
    let mut times: Vec<_> = reconnect_times.iter().map(Duration::as_secs_f64).collect();
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let max = times.last().copied().unwrap_or(f64::NAN);
    println!(
        "soak: {MESSAGES} messages sent from tab A, relay (--data-dir) restarted {} times",
        times.len()
    );
    println!("  tab B shows {} messages", received.len());
    println!("  lost: {lost}, duplicated: {duplicated}, out of order: {out_of_order}");
    println!(
        "  reconnect after a restart (both tabs connected again): median {:.0} ms, max {:.0} ms",
        median * 1000.0,
        max * 1000.0
    );
    println!("  all {MESSAGES} delivered after {:.1} s", typing.as_secs_f64());
}
