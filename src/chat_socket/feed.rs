//! The signals the page renders, kept in step with the [`Session`] once per animation frame.
//!
//! Frames can arrive by the thousand; the page needs redrawing at most once per frame. The socket
//! task applies each frame to the plain [`Session`] at once and asks for a sync; the sync copies
//! only what changed into the signals: one page of received rows per touched page (see
//! [`crate::conversation`]), the state of each sent message whose state changed. A message from
//! someone else thus never touches the "Sent" list, and no list is cloned whole per message.
//!
//! The lists show the room on screen: when another room is shown, both are drawn anew from its
//! conversation and its messages (pages under new keys, so no row of the last room is reused).
//! The room list, presence and typing line change only when the session says so.
//!
//! Every keyed list is keyed by a `u64` from one counter ([`Mirror::new_key`]): the keyed list's
//! code then exists once in the wasm, not once per key type.

use std::sync::Arc;

use leptos::prelude::*;

use wschat_protocol::v1::RoomInfo;

use crate::conversation::{Conversation, Notice, ReceivedMessage};
use crate::outbox::{DeliveryState, Outbox, OutgoingMessage};
use crate::session::{RoomChanges, Session};

/// One page of received rows, as the page renders it.
#[derive(Debug, Clone)]
pub struct PageView {
    /// The page's key in the list, unique while the page lives: pages of another room (or of the
    /// same room shown again) never share one with these.
    pub id: u64,
    /// The page's key in the conversation.
    pub key: u64,
    /// Its rows; set again (a page's worth of `Arc`s) when the page changes.
    pub rows: ArcRwSignal<Vec<Arc<ReceivedMessage>>>,
}

/// The "Received Messages" list.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedFeed {
    /// The pages, oldest first; changes once per page of messages.
    pub pages: ReadSignal<Vec<PageView>>,
    /// What the page says about messages it does not have.
    pub notice: ReadSignal<Option<Notice>>,
    /// How many of the oldest messages were dropped to keep the newest ones.
    pub dropped: ReadSignal<usize>,
    /// How many messages from others arrived live in the room shown (not in a history answer),
    /// all told: what the page announces. Goes up at most once per sync, the newest of them then
    /// last in `pages`.
    pub arrived: ReadSignal<usize>,
}

/// One row of the "Sent Messages" list.
#[derive(Debug, Clone)]
pub struct SentRow {
    /// The row's key in the list, unique while the page lives.
    pub key: u64,
    /// The message as typed (its `state` field is the one it had when the row was made).
    pub message: Arc<OutgoingMessage>,
    /// How far its delivery got, kept current.
    pub state: ArcRwSignal<DeliveryState>,
}

/// The "Sent Messages" list.
#[derive(Debug, Clone, Copy)]
pub struct SentFeed {
    /// The rows, in the order the messages were sent; changes when one is sent or forgotten.
    pub rows: ReadSignal<Vec<SentRow>>,
}

/// One room in the room list. Its counts are signals of their own, as a sent row's state: a
/// message arriving in another room changes one number on the page, not the list.
#[derive(Debug, Clone)]
pub struct RoomRow {
    /// The row's key in the list, the same for a room as long as it is listed.
    pub key: u64,
    /// Its name.
    pub name: String,
    /// Messages from others that arrived while it was not shown.
    pub unread: ArcRwSignal<usize>,
    /// Whether the relay confirmed this tab is in it (false while connecting or joining).
    pub joined: ArcRwSignal<bool>,
}

/// The rooms: which this tab is in, which one is shown, and who is there.
#[derive(Debug, Clone, Copy)]
pub struct RoomsFeed {
    /// The rooms this tab is in, the lobby first.
    pub list: ReadSignal<Vec<RoomRow>>,
    /// The room shown.
    pub shown: ReadSignal<String>,
    /// Who is in the room shown, by name.
    pub presence: ReadSignal<Vec<String>>,
    /// Who is typing in the room shown.
    pub typing: ReadSignal<Vec<String>>,
    /// The rooms there are, as the relay last listed them (see `ChatSocket::list_rooms`).
    pub directory: ReadSignal<Vec<RoomInfo>>,
}

/// The writable side of the lists, kept by the service.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mirror {
    pages: RwSignal<Vec<PageView>>,
    /// The next key for a row of a keyed list.
    next_key: StoredValue<u64>,
    notice: RwSignal<Option<Notice>>,
    dropped: RwSignal<usize>,
    arrived: RwSignal<usize>,
    sent: RwSignal<Vec<SentRow>>,
    rooms: RwSignal<Vec<RoomRow>>,
    shown: RwSignal<String>,
    presence: RwSignal<Vec<String>>,
    typing: RwSignal<Vec<String>>,
    directory: RwSignal<Vec<RoomInfo>>,
}

impl Mirror {
    pub(super) fn new() -> Self {
        Self {
            pages: RwSignal::new(Vec::new()),
            next_key: StoredValue::new(0),
            notice: RwSignal::new(None),
            dropped: RwSignal::new(0),
            arrived: RwSignal::new(0),
            sent: RwSignal::new(Vec::new()),
            rooms: RwSignal::new(Vec::new()),
            shown: RwSignal::new(String::new()),
            presence: RwSignal::new(Vec::new()),
            typing: RwSignal::new(Vec::new()),
            directory: RwSignal::new(Vec::new()),
        }
    }

    /// A key no row of any list has had.
    fn new_key(&self) -> u64 {
        self.next_key.try_update_value(|key| std::mem::replace(key, *key + 1)).unwrap_or_default()
    }

    pub(super) fn rooms(&self) -> RoomsFeed {
        RoomsFeed {
            list: self.rooms.read_only(),
            shown: self.shown.read_only(),
            presence: self.presence.read_only(),
            typing: self.typing.read_only(),
            directory: self.directory.read_only(),
        }
    }

    /// Copies what changed in the session into the signals, at `now_ms` (for the typing line);
    /// `sent` is what changed in the outbox.
    pub(super) fn sync(
        &self,
        session: &mut Session,
        sent_list: bool,
        sent_states: &[String],
        now_ms: f64,
    ) {
        let changes: RoomChanges = session.take_room_changes();
        if changes.shown {
            self.shown.set(session.shown().name.clone());
        }
        let room = session.shown().name.clone();
        self.sync_received(&mut session.shown_mut().conversation, changes.shown);
        if changes.arrived > 0 {
            self.arrived.update(|total| *total += changes.arrived);
        }
        self.sync_sent(&session.outbox, &room, sent_list || changes.shown, sent_states);
        if changes.list {
            // Rooms still listed keep their row, and their counts change in place.
            let old = self.rooms.get_untracked();
            let rows: Vec<RoomRow> = session
                .rooms()
                .iter()
                .map(|room| match old.iter().find(|row| row.name == room.name) {
                    Some(row) => {
                        set_if_changed(&row.unread, room.unread);
                        set_if_changed(&row.joined, room.joined);
                        row.clone()
                    }
                    None => RoomRow {
                        key: self.new_key(),
                        name: room.name.clone(),
                        unread: ArcRwSignal::new(room.unread),
                        joined: ArcRwSignal::new(room.joined),
                    },
                })
                .collect();
            if rows.len() != old.len() || rows.iter().zip(&old).any(|(new, old)| new.key != old.key)
            {
                self.rooms.set(rows);
            }
            if self.directory.with_untracked(|old| old != session.directory()) {
                self.directory.set(session.directory().to_vec());
            }
        }
        if changes.presence {
            self.presence.set(session.shown().presence.clone());
        }
        if changes.typing {
            let typing: Vec<String> =
                session.shown().typing_at(now_ms).map(str::to_owned).collect();
            if self.typing.with_untracked(|old| *old != typing) {
                self.typing.set(typing);
            }
        }
    }

    /// Whether the signals went with their owner (the service was cleaned up).
    pub(super) fn is_disposed(&self) -> bool {
        self.pages.is_disposed()
    }

    pub(super) fn received(&self) -> ReceivedFeed {
        ReceivedFeed {
            pages: self.pages.read_only(),
            notice: self.notice.read_only(),
            dropped: self.dropped.read_only(),
            arrived: self.arrived.read_only(),
        }
    }

    pub(super) fn sent(&self) -> SentFeed {
        SentFeed { rows: self.sent.read_only() }
    }

    /// Copies what changed in the conversation into the received list's signals; `anew`: it is
    /// another room's (or shown again), so every page is drawn anew.
    fn sync_received(&self, conversation: &mut Conversation, anew: bool) {
        let changes = conversation.take_changes();
        if anew {
            let pages = conversation
                .pages()
                .map(|page| PageView {
                    id: self.new_key(),
                    key: page.key,
                    rows: ArcRwSignal::new(page.rows.clone()),
                })
                .collect();
            self.pages.set(pages);
            self.notice.set(conversation.notice());
            self.dropped.set(conversation.dropped());
            return;
        }
        if changes.page_list {
            // Pages still shown keep their signal (and so their rows on the page). Both lists are
            // in key order, and pages only leave the front or join the end: one walk pairs them.
            let old = self.pages.get_untracked();
            let mut old = old.into_iter().peekable();
            let pages = conversation
                .pages()
                .map(|page| {
                    while old.next_if(|view| view.key < page.key).is_some() {}
                    old.next_if(|view| view.key == page.key).unwrap_or_else(|| PageView {
                        id: self.new_key(),
                        key: page.key,
                        rows: ArcRwSignal::new(page.rows.clone()),
                    })
                })
                .collect();
            self.pages.set(pages);
        }
        for key in changes.pages {
            let Some(page) = conversation.page(key) else { continue };
            let view = self
                .pages
                .with_untracked(|pages| pages.iter().rev().find(|view| view.key == key).cloned());
            if let Some(view) = view {
                view.rows.set(page.rows.clone());
            }
        }
        if changes.notice {
            self.notice.set(conversation.notice());
            self.dropped.set(conversation.dropped());
        }
    }

    /// Copies what changed in the outbox into the sent list's signals, which list the messages
    /// written in `room`; `states` are the ids whose state changed.
    fn sync_sent(&self, outbox: &Outbox, room: &str, list_changed: bool, states: &[String]) {
        if list_changed {
            // Rows still listed keep their signal. Both lists are in sending order, and messages
            // are only forgotten or added at the end: one walk pairs them.
            let old = self.sent.get_untracked();
            let mut old = old.into_iter().peekable();
            let rows = outbox
                .entries()
                .iter()
                .filter(|message| message.room == room)
                .map(|message| {
                    while old.next_if(|row| row.message.id != message.id).is_some() {}
                    old.next().unwrap_or_else(|| SentRow {
                        key: self.new_key(),
                        message: Arc::new(message.clone()),
                        state: ArcRwSignal::new(message.state.clone()),
                    })
                })
                .collect();
            self.sent.set(rows);
        }
        if states.is_empty() {
            return;
        }
        self.sent.with_untracked(|rows| {
            for id in states {
                // A few hundred rows at most, and a handful of changes per frame.
                let Some(row) = rows.iter().rev().find(|row| row.message.id == *id) else {
                    continue;
                };
                if let Some(message) = outbox.get(id) {
                    if row.state.with_untracked(|state| *state != message.state) {
                        row.state.set(message.state.clone());
                    }
                }
            }
        });
    }
}

/// Sets `signal` to `value` unless it holds that already (which would redraw for nothing).
fn set_if_changed<T: PartialEq + Send + Sync + 'static>(signal: &ArcRwSignal<T>, value: T) {
    if signal.with_untracked(|old| *old != value) {
        signal.set(value);
    }
}
