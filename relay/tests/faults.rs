//! The relay as a process, under faults from outside: a disk that fills up under it, and a
//! SIGKILL in the middle of a stream of messages. What was acked is what the history holds after
//! a restart on the same data directory: nothing acked lost, nothing twice, seqs contiguous and
//! none given to two messages within an epoch.

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use common::*;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, ServerFrame};
use wschat_protocol::ErrorCode;
use wschat_relay::HISTORY_FILE;

/// What the relay answered to one message.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Acked { seq: u64, duplicate: bool },
    Unavailable,
}

/// Sends message `id` and reads until its ack or its refusal.
async fn post(tab: &mut Client, id: &str, content: &str) -> Answer {
    let frame = ClientFrame::Message {
        room: LOBBY.into(),
        id: id.into(),
        source: "ada".into(),
        content: content.into(),
    };
    send_v1(tab, &frame).await;
    loop {
        match next_v1(tab).await {
            ServerFrame::Ack { id: acked, seq, duplicate, .. } if acked == id => {
                return Answer::Acked { seq, duplicate }
            }
            ServerFrame::Error { error, id: Some(refused), .. } if refused == id => {
                assert_eq!(error.code, ErrorCode::Unavailable, "{}", error.message);
                return Answer::Unavailable;
            }
            ServerFrame::Message { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn welcome_epoch(frame: ServerFrame) -> (String, u64) {
    match frame {
        ServerFrame::Welcome { epoch, latest_seq, .. } => (epoch, latest_seq),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The arguments of a relay on `dir` whose rate limit does not get in the way.
fn args(dir: &Path) -> Vec<&OsStr> {
    ["--data-dir".as_ref(), dir.as_os_str(), "--rate".as_ref(), "1000000".as_ref()]
        .into_iter()
        .chain(["--burst".as_ref(), "1000000".as_ref()])
        .collect()
}

/// Restarts a relay on `dir` and checks its history against what was acked (id to seq):
/// every acked message under its seq, seqs 1 to the latest without a gap, no id twice, in
/// `epoch`.
async fn check_history(dir: &Path, epoch: &str, acked: &HashMap<String, u64>) {
    let relay = RelayProcess::start(&args(dir)).await;
    let mut reader = relay.connect_v1().await;
    let (restarted_epoch, latest) = welcome_epoch(next_v1(&mut reader).await);
    assert_eq!(restarted_epoch, epoch, "the same epoch: {}", relay.logged());
    let (stored, complete, _) = history_in_pages(&mut reader, 0).await;
    assert!(complete);
    let seqs: Vec<_> = stored.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, (1..=latest).collect::<Vec<_>>(), "contiguous, each seq once");
    let mut stored_ids = HashMap::new();
    for message in &stored {
        assert!(
            stored_ids.insert(message.id.clone(), message.seq).is_none(),
            "{} twice",
            message.id
        );
    }
    for (id, seq) in acked {
        assert_eq!(stored_ids.get(id), Some(seq), "acked {id} as {seq}");
    }
    drop(reader);
    relay.kill().await;
}

/// The disk fills up under a relay with a data directory: its history file may not grow past
/// its size (a file-size limit set on the process from outside, so that the relay's writes fail
/// with EFBIG in the kernel, as they fail with ENOSPC on a full disk). Messages are then refused
/// with `unavailable`, not acked; once there is room again, the tab's retries are taken. After a
/// restart on the directory, every acked message is there under its seq, none twice, the seqs
/// contiguous, in the same epoch.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_messages_and_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&args(dir.path())).await;
    let mut tab = relay.connect_v1().await;
    let (epoch, _) = welcome_epoch(next_v1(&mut tab).await);
    let file_size = std::fs::metadata(dir.path().join(HISTORY_FILE)).unwrap().len();
    let full = (file_size, rlimit::INFINITY);
    rlimit::prlimit(relay.pid(), rlimit::Resource::FSIZE, Some(full), None).unwrap();

    let content = "x".repeat(4_000);
    let mut acked = HashMap::new();
    let mut refused = Vec::new();
    let mut next = 0;
    // Until the file has to grow, then a few more while the store fails.
    while refused.len() < 5 {
        assert!(next < 10_000, "the file never filled up: {}", relay.logged());
        let id = format!("m{next}");
        next += 1;
        match post(&mut tab, &id, &content).await {
            Answer::Acked { seq, duplicate: false } => assert!(acked.insert(id, seq).is_none()),
            Answer::Unavailable => refused.push(id),
            other => panic!("{id}: {other:?}"),
        }
    }
    let acked_while_full = acked.len();

    // Room again; the tab sends what was refused again, as its outbox does, until all is taken.
    let room = (rlimit::INFINITY, rlimit::INFINITY);
    rlimit::prlimit(relay.pid(), rlimit::Resource::FSIZE, Some(room), None).unwrap();
    let mut rounds = 0;
    while !refused.is_empty() {
        rounds += 1;
        assert!(rounds < 1_000, "never taken again: {}", relay.logged());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut still = Vec::new();
        for id in refused {
            match post(&mut tab, &id, &content).await {
                Answer::Acked { seq, duplicate: false } => assert!(acked.insert(id, seq).is_none()),
                Answer::Unavailable => still.push(id),
                other => panic!("{id}: {other:?}"),
            }
        }
        refused = still;
    }
    for n in 0..20 {
        let id = format!("after-{n}");
        match post(&mut tab, &id, &content).await {
            Answer::Acked { seq, duplicate: false } => assert!(acked.insert(id, seq).is_none()),
            other => panic!("{id}: {other:?}"),
        }
    }
    let failures = metric_at(relay.address, "wschat_store_failures_total").await;
    assert!(failures >= 1.0, "the store failed: {}", relay.logged());
    eprintln!("{acked_while_full} acked before the disk was full, {failures} store failures");
    drop(tab);
    relay.kill().await;

    check_history(dir.path(), &epoch, &acked).await;
}

/// A tab as the app's outbox keeps it: ids sent and not yet acked, oldest first, and what was
/// acked (id to seq).
#[derive(Default)]
struct Outbox {
    pending: std::collections::VecDeque<String>,
    acked: HashMap<String, u64>,
}

impl Outbox {
    /// Records an ack; a duplicate ack must name the seq the first one gave.
    fn ack(&mut self, id: String, seq: u64) {
        let first = *self.acked.entry(id.clone()).or_insert(seq);
        assert_eq!(first, seq, "{id} acked as {first}, then as {seq}");
        self.pending.retain(|pending| *pending != id);
    }
}

/// A stream of messages, each acked, while the relay (with a data directory) is killed with
/// SIGKILL three times, after 200 acks each time, with up to 32 messages in flight: each start
/// on the same directory keeps the epoch; the tab sends what was not acked again (as the app's
/// outbox does) and then new ones. In the end every acked message is in the history under the
/// seq its ack gave, none twice, seqs contiguous from 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, outbox) = soak(&args(dir.path())).await;
    check_history(dir.path(), &epoch, &outbox.acked).await;
}

/// The same with `--history-limit 0`: no message is kept, yet a message whose ack the kill cut
/// off is recognised when sent again after the restart, so the acked seqs are exactly 1 to the
/// latest, each given once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_without_history_numbers_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = args(dir.path());
    args.extend([OsStr::new("--history-limit"), OsStr::new("0")]);
    let (epoch, outbox) = soak(&args).await;
    let relay = RelayProcess::start(&args).await;
    let mut reader = relay.connect_v1().await;
    let (restarted_epoch, latest) = welcome_epoch(next_v1(&mut reader).await);
    assert_eq!(restarted_epoch, epoch);
    let mut seqs: Vec<_> = outbox.acked.values().copied().collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), outbox.acked.len(), "no seq acked for two messages");
    let stored_twice = latest.saturating_sub(seqs.len() as u64);
    assert_eq!(stored_twice, 0, "seqs given to messages stored a second time");
    assert_eq!((seqs.first(), seqs.last()), (Some(&1), Some(&latest)), "1 to the latest, no gap");
    drop(reader);
    relay.kill().await;
}

/// Runs the stream with three kills on a relay started with `args`; returns the epoch and the
/// tab's outbox, everything acked.
async fn soak(args: &[&OsStr]) -> (String, Outbox) {
    const KILLS: usize = 3;
    const ACKS_BEFORE_KILL: usize = 200;
    const IN_FLIGHT: usize = 32;
    let mut outbox = Outbox::default();
    let mut epoch = None;
    let mut next = 0;
    let mut duplicates = 0;
    for round in 0..=KILLS {
        let relay = RelayProcess::start(args).await;
        let mut tab = relay.connect_v1().await;
        let (this_epoch, _) = welcome_epoch(next_v1(&mut tab).await);
        assert_eq!(epoch.get_or_insert(this_epoch.clone()), &this_epoch, "the same epoch");
        // What was not acked goes again first, in order.
        let resend: Vec<_> = outbox.pending.iter().cloned().collect();
        for id in &resend {
            send_v1(&mut tab, &message(id, id)).await;
        }
        let mut in_flight = resend.len();
        let mut acks = 0;
        let last_round = round == KILLS;
        loop {
            if last_round && outbox.pending.is_empty() {
                break;
            }
            while !last_round && in_flight < IN_FLIGHT {
                let id = format!("m{next}");
                next += 1;
                send_v1(&mut tab, &message(&id, &id)).await;
                outbox.pending.push_back(id);
                in_flight += 1;
            }
            match next_v1(&mut tab).await {
                ServerFrame::Ack { id, seq, duplicate, .. } => {
                    duplicates += usize::from(duplicate);
                    outbox.ack(id, seq);
                    in_flight -= 1;
                    acks += 1;
                }
                other => panic!("unexpected {other:?}: {}", relay.logged()),
            }
            if !last_round && acks == ACKS_BEFORE_KILL {
                break;
            }
        }
        drop(tab);
        relay.kill().await;
    }
    eprintln!("{next} sent and acked, {duplicates} re-sends recognised as duplicates");
    assert_eq!(outbox.acked.len(), next, "every message acked in the end");
    (epoch.unwrap(), outbox)
}
