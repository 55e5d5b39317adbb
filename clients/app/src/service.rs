//! The service a graphical shell runs: the client driver's watch loop,
//! with the user's requests carried out inside it and everything that
//! happens turned into [`Update`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use postern_core::courier::{self, DeliveryState};
use postern_core::e2e::{self, Verification};
use postern_core::error::HasKind;
use postern_core::message::{Body, Envelope, Text};
use postern_core::store::ChangeSet;
use postern_core::{Address, Error, ErrorKind, KvStore, attachment, settings};
use postern_driver::client::{self, Handled, Notice, Shell, Ui};
use postern_driver::transport::Links;
use postern_driver::{ClientError, Runtime, RuntimeRng, is_local_failure};
use postern_engine::attach::{Attachment, queue_attachment};
use postern_engine::contact::{AcceptFlow, InviteFlow};
use postern_engine::inbox::Event;
use postern_engine::outbox;
use postern_engine::watch::Plan;
use postern_link::Connect;

use crate::api::{
    BodyView, Connection, Failure, Image, MessageId, MessageView, Purpose, Request, SafetyView,
    StatusView, Update,
};
use crate::views;

/// How the service runs its watch loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How long a packet waits for its delivery acknowledgement before
    /// it is sent again.
    pub ack_timeout_ms: u64,
    /// Cover packets per minute (mean; only through an onion network).
    pub cover_per_minute: u32,
    /// How often queues on relays other than the home relay are fetched.
    pub others_poll: Duration,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            ack_timeout_ms: postern_engine::route::DEFAULT_ACK_TIMEOUT_MS,
            cover_per_minute: 6,
            others_poll: Duration::from_secs(30),
        }
    }
}

/// The service: requests from `requests`, updates to a callback.
pub struct Service<N> {
    requests: async_channel::Receiver<Request>,
    updates: Box<dyn FnMut(Update)>,
    open: Option<Address>,
    key_changed: BTreeSet<Address>,
    status: StatusView,
    /// Outgoing attachments with parts still in the outbox (and how many
    /// parts in all), whose progress is told after each resend tick.
    sending: BTreeMap<MessageId, (Address, usize)>,
    /// A resend tick ran since progress was last told.
    progress_due: bool,
    /// Invitations from contacts whose identity key changed, paused until
    /// the user accepts the new key (kept in memory only: locking forgets
    /// them, and a new invitation is needed).
    pending_keys: BTreeMap<Address, AcceptFlow>,
    _net: core::marker::PhantomData<N>,
}

/// Most invitations waiting for a decision on a changed key.
const MAX_PENDING_KEYS: usize = 16;

/// Most outgoing transfers followed at once.
const MAX_SENDING: usize = 64;

impl<N> core::fmt::Debug for Service<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Results of the service's steps: a local failure (the store, a bug)
/// ends the service; anything else was shown as [`Update::Failed`].
type Result<T> = core::result::Result<T, ClientError>;

impl<N: Connect + Clone> Service<N> {
    /// A service taking requests from `requests` and telling `updates`.
    pub fn new(
        requests: async_channel::Receiver<Request>,
        updates: impl FnMut(Update) + 'static,
    ) -> Service<N> {
        Service {
            requests,
            updates: Box::new(updates),
            open: None,
            key_changed: BTreeSet::new(),
            status: StatusView::default(),
            sending: BTreeMap::new(),
            progress_due: false,
            pending_keys: BTreeMap::new(),
            _net: core::marker::PhantomData,
        }
    }

    /// Runs until the request channel closes: sends what waits in the
    /// outbox, then watches (reconnecting for as long as it runs) and
    /// carries out each request as it comes. Ends with an error only when
    /// the store fails or on a bug.
    pub async fn run(&mut self, p: &mut dyn KvStore, net: N, cfg: ServiceConfig) -> Result<()> {
        let mut links = Links::new(net);
        let r = self.running(p, &mut links, cfg).await;
        links.close().await;
        r
    }

    async fn running(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        cfg: ServiceConfig,
    ) -> Result<()> {
        let onion = settings::network(p)?;
        self.status.onion = onion.is_some();
        self.status.hops = onion.map_or(0, |n| n.hops);
        self.refresh(p)?;
        if let Err(e) = client::flush_outbox(p, links).await {
            self.failed("send what waited in the outbox", e)?;
        }
        let plan = client::watch_plan(p)?.unwrap_or_else(Plan::empty);
        let wc = client::watch_config(
            cfg.ack_timeout_ms,
            cfg.cover_per_minute,
            self.status.onion,
            cfg.others_poll,
        );
        self.status.cover_per_minute = wc.cover_per_minute;
        if !plan.watched.is_empty() {
            self.status.connection = Connection::Connecting;
        }
        self.refresh_status(p)?;
        client::watch(p, links, plan, wc, self).await?;
        Ok(())
    }

    fn send(&mut self, u: Update) {
        (self.updates)(u);
    }

    /// Shows a failure; passes on one of the store or a bug.
    fn failed(&mut self, action: &'static str, e: impl Into<ClientError>) -> Result<()> {
        let e = e.into();
        if is_local_failure(&e) {
            return Err(e);
        }
        let reason = e.to_string();
        self.send(Update::Failed(Failure {
            action: action.to_owned(),
            reason,
            kind: e.kind(),
        }));
        Ok(())
    }

    fn refused(&mut self, action: &'static str, reason: &str, kind: ErrorKind) {
        self.send(Update::Failed(Failure {
            action: action.to_owned(),
            reason: reason.to_owned(),
            kind,
        }));
    }

    /// Who we are, the contacts and the status.
    fn refresh(&mut self, p: &dyn KvStore) -> Result<()> {
        self.send(Update::Me(views::me(p)?));
        self.refresh_contacts(p)?;
        self.report_sending(p)?;
        self.refresh_status(p)
    }

    /// Follows the outgoing transfers among `views` that have parts still
    /// to send (a conversation opened after a restart shows them).
    fn follow_sending(&mut self, views: &[MessageView]) {
        for v in views.iter().filter(|v| v.outgoing) {
            let (done, total) = match &v.body {
                BodyView::Image { chunks, .. }
                | BodyView::File { chunks, .. }
                | BodyView::Voice { chunks, .. } => *chunks,
                _ => continue,
            };
            if done < total && self.sending.len() < MAX_SENDING {
                self.sending.insert(v.id, (v.peer, total));
            }
        }
    }

    /// Tells how far each followed transfer got (its parts that left the
    /// outbox), and stops following those that finished.
    fn report_sending(&mut self, p: &dyn KvStore) -> Result<()> {
        if self.sending.is_empty() {
            return Ok(());
        }
        let waiting = views::waiting_ids(p)?;
        let mut updates = Vec::new();
        self.sending.retain(|id, (peer, total)| {
            let left = postern_engine::attach::parts_waiting(&waiting, id, *total);
            updates.push(Update::Progress {
                peer: *peer,
                id: *id,
                done: total.saturating_sub(left),
                total: *total,
            });
            left > 0
        });
        for u in updates {
            self.send(u);
        }
        Ok(())
    }

    fn refresh_contacts(&mut self, p: &dyn KvStore) -> Result<()> {
        let c = views::contacts(p, &self.key_changed)?;
        self.send(Update::Contacts(c));
        Ok(())
    }

    fn refresh_status(&mut self, p: &dyn KvStore) -> Result<()> {
        self.status.home = settings::home_relay(p)?.map(|r| r.to_string());
        self.status.directory_fetched = settings::directory_fetched_at(p)?;
        self.status.awaiting_ack = courier::unacknowledged(p)?;
        self.status.outbox = p.outbox()?.len();
        self.send(Update::Status(self.status.clone()));
        Ok(())
    }

    /// Sends the view of message `id` in the conversation with `peer`.
    fn show_message(&mut self, p: &dyn KvStore, peer: &Address, id: &MessageId) -> Result<()> {
        if let Some(m) = views::find(p, peer, id)? {
            let v = views::message(p, &m)?;
            self.follow_sending(core::slice::from_ref(&v));
            self.send(Update::Message(v));
        }
        Ok(())
    }

    fn show_delivery(&mut self, p: &dyn KvStore, id: &MessageId) -> Result<()> {
        if let Some(d) = courier::delivery(p, id)? {
            self.send(Update::Delivery {
                peer: d.peer,
                id: *id,
                state: d.state,
            });
        }
        Ok(())
    }

    fn commit(p: &mut dyn KvStore, cs: ChangeSet) -> Result<()> {
        p.commit(cs)?;
        Ok(())
    }

    /// Sends an outbox entry's blobs through the links; a failure leaves
    /// it queued (the next resend round sends it).
    async fn deliver(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        id: &MessageId,
        out: &courier::Outgoing,
    ) -> Result<bool> {
        let r = async {
            let t = links.get(p).await?;
            client::deliver(p, t, *id, out).await
        }
        .await;
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                self.failed("send (it stays queued and is sent again)", e)?;
                Ok(false)
            }
        }
    }

    async fn send_text(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        to: Address,
        text: String,
        reply_to: Option<MessageId>,
    ) -> Result<()> {
        if self.key_changed.contains(&to) {
            self.refused(
                "send",
                "this contact's identity key changed: accept the new key first",
                ErrorKind::NeedsUserDecision,
            );
            return Ok(());
        }
        let rt = links.connector().runtime().clone();
        let queued = outbox::queue(
            p,
            &to,
            Body::Text(Text(text)),
            reply_to,
            rt.now(),
            &mut RuntimeRng(&rt),
        );
        let (env, out) = match queued {
            Ok(q) => q,
            Err(e) => return self.failed("send", e),
        };
        self.show_message(p, &to, &env.id)?;
        if self.deliver(p, links, &env.id, &out).await? {
            self.show_delivery(p, &env.id)?;
        }
        self.refresh_contacts(p)?;
        self.refresh_status(p)
    }

    async fn send_file(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        to: Address,
        name: &str,
        bytes: Vec<u8>,
        voice: bool,
    ) -> Result<()> {
        if self.key_changed.contains(&to) {
            self.refused(
                "send",
                "this contact's identity key changed: accept the new key first",
                ErrorKind::NeedsUserDecision,
            );
            return Ok(());
        }
        let a = match Attachment::from_file(bytes, name, voice) {
            Ok(a) => a,
            Err(e) => return self.failed("attach the file", e),
        };
        let rt = links.connector().runtime().clone();
        let queued = match queue_attachment(p, &to, a, rt.now(), &mut RuntimeRng(&rt)) {
            Ok(q) => q,
            Err(e) => return self.failed("send the file", e),
        };
        let id = queued.envelope.id;
        self.show_message(p, &to, &id)?;
        let total = queued.entries.len().saturating_sub(1);
        for (n, (entry, out)) in queued.entries.iter().enumerate() {
            if !self.deliver(p, links, entry, out).await? {
                break;
            }
            if n == 0 {
                self.show_delivery(p, &id)?;
            } else {
                self.send(Update::Progress {
                    peer: to,
                    id,
                    done: n,
                    total,
                });
            }
        }
        self.refresh_contacts(p)?;
        self.refresh_status(p)
    }

    async fn retry(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        to: Address,
        id: MessageId,
    ) -> Result<()> {
        let rt = links.connector().runtime().clone();
        let out = match outbox::retry(p, &to, id, rt.now(), &mut RuntimeRng(&rt)) {
            Ok(o) => o,
            Err(e) => return self.failed("send again", e),
        };
        self.show_delivery(p, &id)?;
        if self.deliver(p, links, &id, &out).await? {
            self.show_delivery(p, &id)?;
        }
        self.refresh_status(p)
    }

    async fn invite(&mut self, p: &mut dyn KvStore, links: &mut Links<N>) -> Result<Handled> {
        let Some(home) = settings::home_relay(p)? else {
            self.refused(
                "make an invitation",
                "no home relay is set",
                ErrorKind::Usage,
            );
            return Ok(Handled::Done);
        };
        let name = settings::display_name(p)?;
        let net = links.connector().clone();
        let mut flow = match InviteFlow::new(home.clone(), name, &mut RuntimeRng(net.runtime())) {
            Ok(f) => f,
            Err(e) => {
                self.failed("make an invitation", ClientError::from(e))?;
                return Ok(Handled::Done);
            }
        };
        if let Err(e) = postern_driver::flow::drive(p, &net, &home, &mut flow).await {
            self.failed("make an invitation", e)?;
            return Ok(Handled::Done);
        }
        match flow.invitation() {
            Some(inv) => {
                let link = inv.to_link();
                self.send(Update::Invitation { link });
                // Its queue is watched from now on, for the acceptance.
                Ok(Handled::QueuesChanged)
            }
            None => Err(Error::Bug("invitation flow ended without a link").into()),
        }
    }

    async fn accept(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        link: &str,
    ) -> Result<Handled> {
        let Some(home) = settings::home_relay(p)? else {
            self.refused(
                "accept the invitation",
                "no home relay is set",
                ErrorKind::Usage,
            );
            return Ok(Handled::Done);
        };
        let name = settings::display_name(p)?;
        let net = links.connector().clone();
        let now = net.runtime().now();
        let mut flow = match AcceptFlow::from_link(home.clone(), name, link.trim(), now) {
            Ok(f) => f,
            Err(e) => {
                self.failed("accept the invitation", ClientError::from(e))?;
                return Ok(Handled::Done);
            }
        };
        if let Err(e) = postern_driver::flow::drive(p, &net, &home, &mut flow).await {
            self.failed("accept the invitation", e)?;
            // A queue may have been made before the step that failed.
            return Ok(Handled::QueuesChanged);
        }
        if let Some(peer) = flow.key_changed().copied() {
            // Nothing to or from them until the user decides.
            self.key_changed.insert(peer);
            if self.pending_keys.len() < MAX_PENDING_KEYS || self.pending_keys.contains_key(&peer) {
                self.pending_keys.insert(peer, flow);
            }
            self.send(Update::KeyChanged(peer));
            self.refresh_contacts(p)?;
            return Ok(Handled::QueuesChanged);
        }
        if let Some(peer) = flow.contact().copied() {
            let name = courier::route(p, &peer)?
                .map(|r| r.display_name)
                .unwrap_or_default();
            self.send(Update::ContactAdded { peer, name });
            self.refresh_contacts(p)?;
        }
        Ok(Handled::QueuesChanged)
    }

    /// The user accepts a contact's new identity key, carried by the
    /// invitation they opened: pinned (unverified), a new session, our
    /// introduction delivered; talking again.
    async fn accept_new_key(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        peer: Address,
    ) -> Result<Handled> {
        let (Some(mut flow), Some(home)) =
            (self.pending_keys.remove(&peer), settings::home_relay(p)?)
        else {
            self.refused(
                "accept the new key",
                "open a new invitation from this contact first: it carries their new key",
                ErrorKind::NeedsUserDecision,
            );
            return Ok(Handled::Done);
        };
        let net = links.connector().clone();
        let rt = net.runtime().clone();
        if let Err(e) = flow.accept_new_key(p, rt.now(), &mut RuntimeRng(&rt)) {
            self.failed("accept the new key", ClientError::from(e))?;
            return Ok(Handled::Done);
        }
        self.key_changed.remove(&peer);
        self.send(Update::KeyAccepted(peer));
        // The introduction waits in the outbox if it cannot leave now.
        if let Err(e) = postern_driver::flow::drive(p, &net, &home, &mut flow).await {
            self.failed("introduce us again", e)?;
        }
        self.refresh_contacts(p)?;
        if self.open == Some(peer) {
            let messages = views::conversation(p, &peer)?;
            self.send(Update::Conversation { peer, messages });
        }
        Ok(Handled::QueuesChanged)
    }

    fn codes(&mut self, image: Image) -> Option<Vec<Vec<u8>>> {
        let r = match image {
            Image::File(bytes) => postern_media::qr::scan_image(&bytes),
            Image::Luma {
                width,
                height,
                pixels,
            } => postern_media::qr::scan_luma(width, height, &pixels),
        };
        match r {
            Ok(c) => Some(c),
            Err(_) => {
                self.refused(
                    "read the QR code",
                    "no QR code found in the image",
                    ErrorKind::Usage,
                );
                None
            }
        }
    }

    async fn scan(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        image: Image,
        purpose: Purpose,
    ) -> Result<Handled> {
        let Some(codes) = self.codes(image) else {
            return Ok(Handled::Done);
        };
        match purpose {
            Purpose::Invitation => {
                let link = codes
                    .iter()
                    .filter_map(|c| core::str::from_utf8(c).ok())
                    .find(|s| s.starts_with("postern:"))
                    .map(str::to_owned);
                match link {
                    Some(l) => self.accept(p, links, &l).await,
                    None => {
                        self.refused(
                            "read the invitation",
                            "the QR code is not a Postern invitation",
                            ErrorKind::Usage,
                        );
                        Ok(Handled::Done)
                    }
                }
            }
            Purpose::Verify(peer) => {
                for code in &codes {
                    let (ok, cs) = match e2e::verify_scanned(p, &peer, code) {
                        Ok(r) => r,
                        Err(e) => {
                            self.failed("verify", e)?;
                            return Ok(Handled::Done);
                        }
                    };
                    if ok {
                        Self::commit(p, cs)?;
                        self.send(Update::Verified(peer));
                        self.refresh_contacts(p)?;
                        return Ok(Handled::Done);
                    }
                }
                self.send(Update::Mismatch(peer));
                Ok(Handled::Done)
            }
        }
    }

    fn safety(&mut self, p: &dyn KvStore, peer: &Address) -> Result<()> {
        let sn = match e2e::safety_number(p, peer) {
            Ok(s) => s,
            Err(e) => return self.failed("show the safety number", e),
        };
        let c = e2e::contact(p, peer)?;
        let name = courier::route(p, peer)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        self.send(Update::Safety(SafetyView {
            peer: *peer,
            name,
            digits: sn.digits.clone(),
            scannable: sn.scannable.clone(),
            verified: c.is_some_and(|c| c.verification == Verification::Verified),
        }));
        Ok(())
    }

    fn attachment_bytes(&mut self, p: &dyn KvStore, peer: &Address, id: &MessageId) -> Result<()> {
        let Some(m) = views::find(p, peer, id)? else {
            self.refused("open the attachment", "no such message", ErrorKind::Usage);
            return Ok(());
        };
        let Ok(env) = Envelope::decode(&m.body) else {
            self.refused("open the attachment", "unreadable message", ErrorKind::Bug);
            return Ok(());
        };
        let Some(aref) = views::attachment_of(&env.body) else {
            self.refused("open the attachment", "no attachment", ErrorKind::Usage);
            return Ok(());
        };
        let verified = match attachment::verify(p, aref) {
            Ok(v) => v,
            Err(e) => return self.failed("open the attachment", e),
        };
        let total = attachment::chunk_count(aref.size)?;
        let mut bytes = Vec::with_capacity(usize::try_from(aref.size).unwrap_or(0));
        for i in 0..total {
            bytes.extend_from_slice(&attachment::read_chunk(p, &verified, i)?);
        }
        let name = postern_engine::attach::download_name(Some(&env.body), id);
        self.send(Update::AttachmentBytes {
            peer: *peer,
            id: *id,
            name,
            bytes,
        });
        Ok(())
    }

    fn mark_read(&mut self, p: &mut dyn KvStore, peer: Address) -> Result<()> {
        let mut cs = ChangeSet::new();
        cs.mark_read(peer);
        Self::commit(p, cs)?;
        self.refresh_contacts(p)
    }

    async fn carry_out(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        request: Request,
    ) -> Result<Handled> {
        match request {
            Request::Refresh => self.refresh(p)?,
            Request::Open(peer) => {
                self.open = Some(peer);
                let messages = views::conversation(p, &peer)?;
                self.follow_sending(&messages);
                self.send(Update::Conversation { peer, messages });
                self.mark_read(p, peer)?;
                if self.key_changed.contains(&peer) {
                    self.send(Update::KeyChanged(peer));
                }
            }
            Request::Close => self.open = None,
            Request::Read(peer) => self.mark_read(p, peer)?,
            Request::SendText { to, text, reply_to } => {
                self.send_text(p, links, to, text, reply_to).await?;
            }
            Request::SendFile {
                to,
                name,
                bytes,
                voice,
            } => self.send_file(p, links, to, &name, bytes, voice).await?,
            Request::Retry { to, id } => self.retry(p, links, to, id).await?,
            Request::CreateInvite => return self.invite(p, links).await,
            Request::AcceptInvite(link) => return self.accept(p, links, &link).await,
            Request::AcceptNewKey(peer) => return self.accept_new_key(p, links, peer).await,
            Request::Scan { image, purpose } => return self.scan(p, links, image, purpose).await,
            Request::Safety(peer) => self.safety(p, &peer)?,
            Request::ConfirmVerified(peer) => {
                match e2e::set_verified(p, &peer, Verification::Verified) {
                    Ok(cs) => {
                        Self::commit(p, cs)?;
                        self.send(Update::Verified(peer));
                        self.refresh_contacts(p)?;
                    }
                    Err(e) => self.failed("verify", e)?,
                }
            }
            Request::Attachment { peer, id } => self.attachment_bytes(p, &peer, &id)?,
        }
        Ok(Handled::Done)
    }
}

impl<N: Connect + Clone> Ui for Service<N> {
    type Error = ClientError;

    fn event(&mut self, p: &dyn KvStore, e: Event) -> Result<()> {
        match e {
            Event::NewContact {
                peer, display_name, ..
            } => {
                self.send(Update::ContactAdded {
                    peer,
                    name: display_name,
                });
                self.refresh_contacts(p)?;
                if self.open == Some(peer) {
                    let messages = views::conversation(p, &peer)?;
                    self.send(Update::Conversation { peer, messages });
                }
            }
            Event::Message { from, envelope } => match &envelope.body {
                Body::Receipt(ids) => {
                    for id in ids {
                        self.show_delivery(p, id)?;
                    }
                }
                _ => {
                    self.show_message(p, &from, &envelope.id)?;
                    self.refresh_contacts(p)?;
                }
            },
            Event::Chunk {
                from,
                message_id,
                missing,
                total,
            } => self.send(Update::Progress {
                peer: from,
                id: message_id,
                done: total.saturating_sub(missing),
                total,
            }),
            Event::AttachmentReady {
                from, message_id, ..
            } => self.show_message(p, &from, &message_id)?,
            Event::Confirmed { stored, .. } => {
                for c in stored {
                    self.send(Update::Delivery {
                        peer: c.peer,
                        id: c.id,
                        state: c.state,
                    });
                }
                self.refresh_status(p)?;
            }
            Event::KeyChanged { peer } if self.key_changed.insert(peer) => {
                self.send(Update::KeyChanged(peer));
                self.refresh_contacts(p)?;
            }
            // Dropped items are counted by nobody's eyes: nothing to show.
            _ => {}
        }
        Ok(())
    }

    fn notice(&mut self, n: Notice<'_, ClientError>) {
        match n {
            Notice::Started { .. } | Notice::Reconnected => {
                self.status.connection = Connection::Connected;
            }
            Notice::Lost(_) | Notice::OutOfReach(_) => {
                self.status.connection = Connection::Reconnecting;
            }
            Notice::Resent(round) => {
                // The outbox was sent before the round: tell progress.
                self.progress_due = !self.sending.is_empty();
                self.status.awaiting_ack = round.waiting;
                if round.resent.gave_up > 0 {
                    // Messages failed: the open conversation shows which.
                    if let Some(peer) = self.open {
                        self.send(Update::Stale(peer));
                    }
                }
            }
            Notice::CoverSent(n) => self.status.cover_sent = n,
            _ => return,
        }
        self.send(Update::Status(self.status.clone()));
    }
}

impl<N: Connect + Clone> Shell<N> for Service<N> {
    type Request = Request;

    async fn next_request(&mut self) -> Option<Request> {
        if core::mem::take(&mut self.progress_due) {
            return Some(Request::Refresh);
        }
        self.requests.recv().await.ok()
    }

    async fn handle(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        request: Request,
    ) -> Result<Handled> {
        self.carry_out(p, links, request).await
    }

    fn keep_trying(&self) -> bool {
        true
    }
}

/// Whether a delivery state shows a message still on its way.
pub fn on_its_way(state: Option<DeliveryState>) -> bool {
    matches!(state, Some(DeliveryState::Queued | DeliveryState::Sent))
}
