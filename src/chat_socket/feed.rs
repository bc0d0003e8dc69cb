//! The signals the page renders, kept in step with the [`Session`] once per animation frame.
//!
//! Frames can arrive by the thousand; the page needs redrawing at most once per frame. The socket
//! task applies each frame to the plain [`Session`] at once and asks for a sync; the sync copies
//! only what changed into the signals: one page of received rows per touched page (see
//! [`crate::conversation`]), the state of each sent message whose state changed. A message from
//! someone else thus never touches the "Sent" list, and no list is cloned whole per message.

use std::sync::Arc;

use leptos::prelude::*;

use crate::conversation::{Conversation, Notice, ReceivedMessage};
use crate::outbox::{DeliveryState, Outbox, OutgoingMessage};

/// One page of received rows, as the page renders it.
#[derive(Debug, Clone)]
pub struct PageView {
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
}

/// One row of the "Sent Messages" list.
#[derive(Debug, Clone)]
pub struct SentRow {
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

/// The writable side of both lists, kept by the service.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mirror {
    pages: RwSignal<Vec<PageView>>,
    notice: RwSignal<Option<Notice>>,
    dropped: RwSignal<usize>,
    sent: RwSignal<Vec<SentRow>>,
}

impl Mirror {
    pub(super) fn new() -> Self {
        Self {
            pages: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            dropped: RwSignal::new(0),
            sent: RwSignal::new(Vec::new()),
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
        }
    }

    pub(super) fn sent(&self) -> SentFeed {
        SentFeed { rows: self.sent.read_only() }
    }

    /// Copies what changed in the conversation into the received list's signals.
    pub(super) fn sync_received(&self, conversation: &mut Conversation) {
        let changes = conversation.take_changes();
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

    /// Copies what changed in the outbox into the sent list's signals; `states` are the ids whose
    /// state changed.
    pub(super) fn sync_sent(&self, outbox: &Outbox, list_changed: bool, states: &[String]) {
        if list_changed {
            // Rows still listed keep their signal. Both lists are in sending order, and messages
            // are only forgotten or added at the end: one walk pairs them.
            let old = self.sent.get_untracked();
            let mut old = old.into_iter().peekable();
            let rows = outbox
                .entries()
                .iter()
                .map(|message| {
                    while old.next_if(|row| row.message.id != message.id).is_some() {}
                    old.next().unwrap_or_else(|| SentRow {
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
