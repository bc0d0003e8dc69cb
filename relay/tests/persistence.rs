//! The history with `--data-dir`, as clients see it across a restart: same epoch, same seqs, the
//! same answers and dedupe, and numbering that goes on.

mod common;

use std::path::Path;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::ServerFrame;
use wschat_relay::{Config, RunError, StoreError, HISTORY_FILE};

fn config(dir: &Path) -> Config {
    Config { data_dir: Some(dir.to_owned()), ..Config::default() }
}

/// Reads the welcome frame; returns (epoch, latest_seq, oldest_seq).
async fn welcome(client: &mut Client) -> (String, u64, u64) {
    match next_v1(client).await {
        ServerFrame::Welcome { epoch, latest_seq, oldest_seq } => (epoch, latest_seq, oldest_seq),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// Sends a message and returns the ack's (seq, duplicate).
async fn post(client: &mut Client, id: &str, content: &str) -> (u64, bool) {
    send_v1(client, &message(id, content)).await;
    match next_v1(client).await {
        ServerFrame::Ack { id: acked, seq, duplicate, .. } => {
            assert_eq!(acked, id);
            (seq, duplicate)
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// A tab that was at seq 2 when the relay restarted on the same data directory sees the same
/// epoch, gets exactly the messages it missed, has its retried message recognised, and the
/// conversation numbers on from where it stopped.
#[tokio::test]
async fn the_conversation_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestRelay::start(config(dir.path())).await;
    let mut alice = first.connect_v1().await;
    let (epoch, latest, _) = welcome(&mut alice).await;
    assert_eq!(latest, 0, "a new data directory starts empty");
    for n in 1..=5 {
        assert_eq!(post(&mut alice, &format!("m{n}"), &format!("text {n}")).await, (n, false));
    }
    let (before, _) = history(&mut alice, 1, 0).await;
    // Gone before the relay stops, so that stopping does not wait for their close handshakes.
    drop(alice);
    first.stop().await;

    let second = TestRelay::start(config(dir.path())).await;
    let mut alice = second.connect_v1().await;
    let mut bob = second.connect_v1().await;
    assert_eq!(welcome(&mut alice).await, (epoch.clone(), 5, 1), "same epoch, same seqs");
    welcome(&mut bob).await;

    let (rest, complete) = history(&mut bob, 2, 2).await;
    assert!(complete);
    assert_eq!(rest, before[2..], "seqs 3 to 5, field for field");

    // Alice never saw the ack for m1 (say) and sends it again: it is the same message.
    assert_eq!(post(&mut alice, "m1", "text 1").await, (1, true));
    assert_eq!(post(&mut alice, "m6", "after the restart").await, (6, false));
    match next_v1(&mut bob).await {
        ServerFrame::Message { message, .. } => {
            assert_eq!((message.seq, message.id.as_str()), (6, "m6"))
        }
        other => panic!("expected m6 and nothing before it, got {other:?}"),
    }
    drop((alice, bob));
    second.stop().await;

    let third = TestRelay::start(config(dir.path())).await;
    let mut carol = third.connect_v1().await;
    assert_eq!(welcome(&mut carol).await, (epoch, 6, 1), "what came after a restart is kept too");
    drop(carol);
    third.stop().await;
}

/// Only the last `history_limit` messages outlive a restart: a tab further behind is told its
/// answer is incomplete, as it would have been without the restart.
#[tokio::test]
async fn only_the_last_n_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limited = Config { history_limit: 3, ..config(dir.path()) };
    let first = TestRelay::start(limited.clone()).await;
    let mut alice = first.connect_v1().await;
    welcome(&mut alice).await;
    for n in 1..=5 {
        post(&mut alice, &format!("m{n}"), "x").await;
    }
    drop(alice);
    first.stop().await;

    let second = TestRelay::start(limited).await;
    let mut alice = second.connect_v1().await;
    let (_, latest, oldest) = welcome(&mut alice).await;
    assert_eq!((latest, oldest), (5, 3), "holds seqs 3 to 5");
    let (messages, complete) = history(&mut alice, 1, 1).await;
    assert!(!complete, "seq 2 is gone");
    assert_eq!(messages.iter().map(|message| message.seq).collect::<Vec<_>>(), [3, 4, 5]);
    // m1 fell out of the history, but a re-send of it is still recognised (the dedupe window
    // is its own), and the next message is numbered on.
    assert_eq!(post(&mut alice, "m1", "x").await, (1, true));
    assert_eq!(post(&mut alice, "m6", "x").await, (6, false));
    drop(alice);
    second.stop().await;
}

/// A second relay pointed at a data directory that a running relay uses refuses to start, naming
/// the file, and the running one is unaffected.
#[tokio::test]
async fn two_relays_cannot_share_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let running = TestRelay::start(config(dir.path())).await;
    let mut alice = running.connect_v1().await;
    welcome(&mut alice).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = tokio::time::timeout(
        PATIENCE,
        wschat_relay::run(listener, config(dir.path()), std::future::pending()),
    )
    .await
    .expect("the second relay must not start");
    match refused {
        Err(RunError::Store(error @ StoreError::Open { .. })) => {
            let file = dir.path().join(HISTORY_FILE).display().to_string();
            assert!(error.to_string().contains(&file), "{error}");
        }
        other => panic!("expected an open error, got {other:?}"),
    }
    assert_eq!(post(&mut alice, "still", "here").await, (1, false));
    drop(alice);
    running.stop().await;
}

/// The `wschat-relay` command given a data directory it cannot use (`WSCHAT_DATA_DIR` naming a
/// file) exits with an error that names it, instead of serving without its history.
#[tokio::test]
async fn the_command_refuses_a_data_dir_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wschat-relay"))
            .args(["--listen", "127.0.0.1:0"])
            .env("WSCHAT_DATA_DIR", &not_a_dir)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let printed = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(printed.contains(&not_a_dir.display().to_string()), "{printed}");
}

/// Ten tabs each flush an outbox of 30 messages at once, all together, with a data directory:
/// every message is acked, every tab receives the others' messages in seq order with no gap,
/// and after a restart the file holds exactly the acked messages under their seqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_committed_together_and_in_order() {
    const TABS: usize = 10;
    const EACH: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(Config { rate: unlimited(), ..config(dir.path()) }).await;
    let mut tabs = Vec::new();
    for _ in 0..TABS {
        let mut tab = relay.connect_v1().await;
        welcome(&mut tab).await;
        tabs.push(tab);
    }
    let sending: Vec<_> = tabs
        .into_iter()
        .enumerate()
        .map(|(t, mut tab)| {
            tokio::spawn(async move {
                for n in 0..EACH {
                    let frame = message(&format!("tab{t}-{n}"), &n.to_string());
                    tab.feed(Message::text(frame.to_json())).await.unwrap();
                }
                tab.flush().await.unwrap();
                // Read until this tab has its own acks and every other tab's messages.
                let (mut acks, mut seen) = (Vec::new(), Vec::new());
                while acks.len() < EACH || seen.len() < (TABS - 1) * EACH {
                    match next_v1(&mut tab).await {
                        ServerFrame::Ack { id, seq, duplicate: false, .. } => acks.push((seq, id)),
                        ServerFrame::Message { message, .. } => seen.push(message.seq),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (acks, seen, tab)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut tabs = Vec::new();
    for task in sending {
        let (acks, seen, tab) = task.await.unwrap();
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "in seq order");
        let mine: Vec<_> = acks.iter().map(|(seq, _)| *seq).collect();
        let mut all: Vec<_> = seen.iter().chain(&mine).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=(TABS * EACH) as u64).collect::<Vec<_>>(), "no gap, no repeat");
        acked.extend(acks);
        tabs.push(tab);
    }
    drop(tabs);
    relay.stop().await;

    let relay = TestRelay::start(config(dir.path())).await;
    let mut reader = relay.connect_v1().await;
    assert_eq!(welcome(&mut reader).await.1, (TABS * EACH) as u64);
    let (stored, complete) = history(&mut reader, 1, 0).await;
    assert!(complete);
    let mut stored: Vec<_> = stored.into_iter().map(|message| (message.seq, message.id)).collect();
    stored.sort_unstable();
    acked.sort_unstable();
    assert_eq!(stored, acked);
    drop(reader);
    relay.stop().await;
}

/// 150 messages of 10,000 emoji each (about 40 KB, 6 MB together: more than a client's 4 MiB
/// queue) are acked. A new tab asking for everything gets all of them, in pages, in order, and
/// stays connected; so does a new tab after a restart on the same data directory.
#[tokio::test]
async fn a_history_larger_than_a_queue_reaches_every_new_tab() {
    const MESSAGES: u64 = 150;
    let content = "😀".repeat(10_000);
    let dir = tempfile::tempdir().unwrap();
    let config = Config { rate: unlimited(), ..config(dir.path()) };
    let first = TestRelay::start(config.clone()).await;
    let mut sender = first.connect_v1().await;
    welcome(&mut sender).await;
    for n in 1..=MESSAGES {
        assert_eq!(post(&mut sender, &format!("m{n}"), &content).await, (n, false));
    }

    let check = async |relay: &TestRelay| {
        let mut tab = relay.connect_v1().await;
        assert_eq!(welcome(&mut tab).await.1, MESSAGES);
        let (messages, complete, pages) = history_in_pages(&mut tab, 0).await;
        assert!(complete);
        assert!(pages > 1, "one answer would not fit the queue");
        let seqs: Vec<_> = messages.iter().map(|message| message.seq).collect();
        assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
        assert!(messages.iter().all(|message| message.content == content));
        send_v1(&mut tab, &wschat_protocol::v1::ClientFrame::Ping { request_id: 99 }).await;
        assert_eq!(next_v1(&mut tab).await, ServerFrame::Pong { request_id: 99 }, "still open");
    };
    check(&first).await;
    drop(sender);
    first.stop().await;

    let second = TestRelay::start(config).await;
    check(&second).await;
    second.stop().await;
}

/// With `--history-limit 0` and a data directory, a message whose ack was lost to a restart and
/// that the tab sends again on the restarted relay is recognised: the ids of recent messages
/// are kept on disk apart from the history.
#[tokio::test]
async fn a_resent_message_is_recognised_across_a_restart_without_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { history_limit: 0, ..config(dir.path()) };
    let first = TestRelay::start(config.clone()).await;
    let mut tab = first.connect_v1().await;
    welcome(&mut tab).await;
    assert_eq!(post(&mut tab, "m1", "before").await, (1, false));
    drop(tab);
    first.stop().await;

    let second = TestRelay::start(config).await;
    let mut tab = second.connect_v1().await;
    assert_eq!(welcome(&mut tab).await.1, 1);
    assert_eq!(post(&mut tab, "m1", "before").await, (1, true));
    assert_eq!(post(&mut tab, "m2", "after").await, (2, false));
    drop(tab);
    second.stop().await;
}
