//! Views built from the store: what the user interface draws. Bounded:
//! a conversation shows at most [`MAX_HISTORY`] messages, a thumbnail is
//! decoded at most [`THUMBNAIL_SIDE`] pixels per side, a preview line at
//! most [`PREVIEW_CHARS`] characters.

use std::collections::{BTreeMap, BTreeSet};

use postern_core::courier::{self, DeliveryState};
use postern_core::e2e::{self, Verification};
use postern_core::message::{AttachmentRef, Body, Envelope};
use postern_core::store::{Direction, StoredMessage};
use postern_core::{Address, KvStore, Result, attachment, settings};

use crate::api::{BodyView, ContactView, MeView, MessageView};

/// Most messages of a conversation shown (the most recent).
pub const MAX_HISTORY: usize = 20_000;
/// Pixels per side a thumbnail is decoded at, at most.
pub const THUMBNAIL_SIDE: u32 = 320;
/// Characters of a last-message preview in the contact list.
pub const PREVIEW_CHARS: usize = 80;

/// Who we are.
pub fn me(p: &dyn KvStore) -> Result<MeView> {
    Ok(MeView {
        address: e2e::local_address(p)?,
        name: settings::display_name(p)?,
        home: settings::home_relay(p)?.map(|r| r.to_string()),
    })
}

/// One line for a body, as a contact list shows it: a text's first line
/// (control characters replaced), or what an attachment is.
pub fn preview(body: &Body) -> Option<String> {
    let line = match body {
        Body::Text(t) => {
            t.0.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect()
        }
        Body::Image(_) => "Photo".to_owned(),
        Body::File(f) => format!("File: {}", f.name),
        Body::Voice(v) => format!("Voice message ({} s)", v.duration_ms.div_ceil(1000)),
        _ => return None,
    };
    Some(line.chars().take(PREVIEW_CHARS).collect())
}

/// Every contact, the most recent conversation first, then by name.
pub fn contacts(
    p: &dyn KvStore,
    key_changed: &std::collections::BTreeSet<Address>,
) -> Result<Vec<ContactView>> {
    let summaries: BTreeMap<Address, _> = p
        .conversations()?
        .into_iter()
        .map(|c| (c.peer, c))
        .collect();
    let mut out = Vec::new();
    for c in e2e::contacts(p)? {
        let name = courier::route(p, &c.address)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        let s = summaries.get(&c.address);
        let last = s.and_then(|s| Envelope::decode(&s.last.body).ok());
        out.push(ContactView {
            address: c.address,
            name,
            verified: c.verification == Verification::Verified,
            unread: s.map_or(0, |s| s.unread),
            last: last.as_ref().and_then(|e| preview(&e.body)),
            last_time: s.map(|s| s.last.timestamp),
            key_changed: key_changed.contains(&c.address),
        });
    }
    out.sort_by(|a, b| {
        b.last_time
            .cmp(&a.last_time)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(out)
}

/// The attachment a body carries.
pub fn attachment_of(body: &Body) -> Option<&AttachmentRef> {
    match body {
        Body::Image(i) => Some(&i.attachment),
        Body::File(f) => Some(&f.attachment),
        Body::Voice(v) => Some(&v.attachment),
        _ => None,
    }
}

/// The outbox's entry ids: an outgoing attachment's parts still there are
/// still to send.
pub fn waiting_ids(p: &dyn KvStore) -> Result<BTreeSet<[u8; 16]>> {
    Ok(p.outbox()?.into_iter().map(|e| e.id).collect())
}

/// How far a transfer got: for what we receive, chunks stored and in
/// all; for what we send, the outbox parts that left and in all (they
/// stay in the outbox until sent, across restarts).
fn chunks(
    p: &dyn KvStore,
    a: &AttachmentRef,
    m: &StoredMessage,
    waiting: &mut Option<BTreeSet<[u8; 16]>>,
) -> Result<(usize, usize)> {
    if m.direction == Direction::Outgoing {
        let parts = postern_engine::attach::part_count(a.size).unwrap_or(0);
        let ids = match waiting {
            Some(w) => w,
            None => waiting.insert(waiting_ids(p)?),
        };
        let left = postern_engine::attach::parts_waiting(ids, &m.id, parts);
        return Ok((parts.saturating_sub(left), parts));
    }
    let total = attachment::chunk_count(a.size).map_or(0, |n| n as usize);
    let missing = attachment::missing_chunks(p, a)?.len();
    Ok((total.saturating_sub(missing), total))
}

/// A stored message as the conversation shows it.
pub fn message(p: &dyn KvStore, m: &StoredMessage) -> Result<MessageView> {
    message_with(p, m, &mut None)
}

/// [`message`], with the outbox's ids read once for many messages.
fn message_with(
    p: &dyn KvStore,
    m: &StoredMessage,
    waiting: &mut Option<BTreeSet<[u8; 16]>>,
) -> Result<MessageView> {
    let outgoing = m.direction == Direction::Outgoing;
    let env = Envelope::decode(&m.body).ok();
    let body = match env.as_ref().map(|e| &e.body) {
        Some(Body::Text(t)) => BodyView::Text(t.0.clone()),
        Some(Body::Image(i)) => BodyView::Image {
            width: i.width,
            height: i.height,
            thumbnail: postern_media::images::decode_for_display(&i.thumbnail, THUMBNAIL_SIDE).ok(),
            size: i.attachment.size,
            chunks: chunks(p, &i.attachment, m, waiting)?,
        },
        Some(Body::File(f)) => BodyView::File {
            name: f.name.clone(),
            size: f.attachment.size,
            chunks: chunks(p, &f.attachment, m, waiting)?,
        },
        Some(Body::Voice(v)) => BodyView::Voice {
            duration_ms: v.duration_ms,
            waveform: v.waveform.clone(),
            size: v.attachment.size,
            chunks: chunks(p, &v.attachment, m, waiting)?,
        },
        _ => BodyView::Unsupported,
    };
    let delivery = if outgoing {
        courier::delivery(p, &m.id)?.map(|d| d.state)
    } else {
        None
    };
    Ok(MessageView {
        peer: m.peer,
        id: m.id,
        outgoing,
        time: m.timestamp,
        reply_to: env.and_then(|e| e.reply_to),
        body,
        delivery,
    })
}

/// The conversation with `peer`, oldest first.
pub fn conversation(p: &dyn KvStore, peer: &Address) -> Result<Vec<MessageView>> {
    let mut waiting = None;
    p.history(peer, MAX_HISTORY)?
        .iter()
        .map(|m| message_with(p, m, &mut waiting))
        .collect()
}

/// A stored message of the conversation with `peer`, by id.
pub fn find(p: &dyn KvStore, peer: &Address, id: &[u8; 16]) -> Result<Option<StoredMessage>> {
    Ok(p.history(peer, MAX_HISTORY)?
        .into_iter()
        .rev()
        .find(|m| m.id == *id))
}

/// Whether a message in this state may be sent again by the user.
pub fn may_retry(state: Option<DeliveryState>) -> bool {
    state == Some(DeliveryState::Failed)
}
