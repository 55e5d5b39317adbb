//! A client's running work, carried out for any shell (the CLI, the
//! desktop and browser clients): sending from the outbox, receipts, the
//! resend round, collecting a relay's queues, and the watch loop. The
//! engine decides every step; a shell only shows what happened, through
//! [`Ui`].

use core::pin::{Pin, pin};
use core::time::Duration;

use futures_util::future::{Either, select};
use postern_core::courier::{self, Outgoing, OwnQueue};
use postern_core::error::HasKind;
use postern_core::message::{Body, Envelope};
use postern_core::relay_proto::QueueId;
use postern_core::{Address, KvStore, RelayAddress};
use postern_engine::inbox::{self, Event, Receipts};
use postern_engine::watch::{Plan, Reaction, Task, WatchInput, Watcher};
use postern_engine::{Millis, WatchConfig, outbox, route};
use postern_link::{Connect, Connection, Link, NetError, Runtime, RuntimeRng};

use crate::flow::fetch_on;
use crate::transport::{self, Links, Transport, put_all};
use crate::{ClientError, Conn, Result, commit, is_local_failure};

/// Sends an outbox entry's blobs and removes it from the outbox.
pub async fn deliver<N: Connect>(
    p: &mut dyn KvStore,
    t: &mut Transport<N>,
    id: [u8; 16],
    out: &Outgoing,
) -> Result<()> {
    put_all(p, t, out).await?;
    let now = t.runtime().now();
    Ok(outbox::sent(p, id, !t.is_onion(), now)?)
}

/// Sends whatever an earlier run committed but could not send.
pub async fn flush_outbox<N: Connect + Clone>(
    p: &mut dyn KvStore,
    links: &mut Links<N>,
) -> Result<()> {
    for (id, out) in outbox::waiting(p)? {
        let t = links.get(p).await?;
        deliver(p, t, id, &out).await?;
    }
    Ok(())
}

/// Seals a body for `peer`, commits it with an outbox entry, sends it. A
/// failure to send leaves it in the outbox (committed first), to be sent
/// by the next [`flush_outbox`].
pub async fn send_body<N: Connect>(
    p: &mut dyn KvStore,
    t: &mut Transport<N>,
    rt: &N::Runtime,
    peer: &Address,
    body: Body,
) -> Result<Envelope> {
    let (env, out) = outbox::queue(p, peer, body, None, rt.now(), &mut RuntimeRng(rt))?;
    deliver(p, t, env.id, &out).await?;
    Ok(env)
}

/// Tells each contact which of its messages arrived (the engine makes one
/// receipt message per `MAX_RECEIPT_IDS` ids).
pub async fn send_receipts<N: Connect + Clone>(
    p: &mut dyn KvStore,
    links: &mut Links<N>,
    receipts: Receipts,
) -> Result<()> {
    let rt = links.connector().runtime().clone();
    for (peer, body) in inbox::receipt_bodies(receipts) {
        let t = links.get(p).await?;
        send_body(p, t, &rt, &peer, body).await?;
    }
    Ok(())
}

/// What one resend round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// What was sent again, given up or could not leave.
    pub resent: transport::Resent,
    /// Loop cover packets given up as lost (failing or hostile relays?).
    pub lost_loops: usize,
    /// Packets still waiting for a delivery acknowledgement.
    pub waiting: usize,
}

/// Sends again whatever the onion network has not acknowledged within
/// `timeout_ms`, and counts the loops that did not come back.
pub async fn resend_round<N: Connect + Clone>(
    p: &mut dyn KvStore,
    links: &mut Links<N>,
    timeout_ms: u64,
) -> Result<Round> {
    let now = links.connector().runtime().now();
    let mut round = Round::default();
    if !p
        .keys(postern_core::store::Namespace::PendingAck)?
        .is_empty()
    {
        let t = links.get(p).await?;
        round.resent = transport::resend_overdue(p, t, timeout_ms).await?;
    }
    let (lost, cs) = courier::lost_loops(p, route::lost_loop_cutoff(now, timeout_ms))?;
    commit(p, cs)?;
    round.lost_loops = lost;
    round.waiting = courier::unacknowledged(p)?;
    Ok(round)
}

/// A step of the watch loop that failed on the network and is tried
/// again later (the loop goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetching the queues on another relay.
    PollOther,
    /// The resend round.
    Resend,
    /// Sending a cover packet.
    Cover,
}

/// What a watching client tells its user.
#[derive(Debug)]
#[non_exhaustive]
pub enum Notice<'a, E> {
    /// Watching has started.
    Started {
        /// Queues subscribed to on the watched relay.
        watched: usize,
        /// Queues polled on other relays.
        polled: usize,
    },
    /// The connection to the watched relay is back.
    Reconnected,
    /// The connection to the watched relay broke; reconnecting.
    Lost(&'a E),
    /// A reconnection failed; trying again later.
    OutOfReach(&'a E),
    /// A step failed on the network and is tried again later.
    Failed(Step, &'a E),
    /// A resend round ran.
    Resent(Round),
    /// A cover packet left (this many so far).
    CoverSent(u64),
}

/// How a shell shows a client's work.
pub trait Ui {
    /// The shell's error; its own failures (saving a file, say) stop the
    /// work like a failure of the profile when [`is_local_failure`].
    type Error: From<ClientError> + HasKind + core::fmt::Display;
    /// One event from the inbox, shown as it is committed.
    fn event(&mut self, p: &dyn KvStore, e: Event) -> core::result::Result<(), Self::Error>;
    /// Something about watching.
    fn notice(&mut self, n: Notice<'_, Self::Error>);
}

/// What a shell that stays open hands the watch loop: requests from its
/// user (send this, add that contact) and how each is carried out, over
/// the same store and the same links as everything else the loop does —
/// so a message typed while watching leaves by the links cover leaves by.
pub trait Shell<N: Connect>: Ui {
    /// A request from the user.
    type Request;
    /// The next request; `None` ends the watch. Must be cancel-safe: the
    /// loop drops this future whenever something else wakes it first.
    fn next_request(&mut self) -> impl Future<Output = Option<Self::Request>>;
    /// Carries out one request.
    fn handle(
        &mut self,
        p: &mut dyn KvStore,
        links: &mut Links<N>,
        request: Self::Request,
    ) -> impl Future<Output = core::result::Result<Handled, Self::Error>>;
    /// Whether a first connection that fails is retried like a lost one
    /// (a shell that stays open) instead of ending the watch.
    fn keep_trying(&self) -> bool {
        false
    }
}

/// What carrying out a request changed for the watch loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Nothing it needs to know.
    Done,
    /// The client's queues changed (a contact added): watch and poll
    /// again by the new plan.
    QueuesChanged,
}

/// A shell whose only request is to stop: a [`Ui`] and a future that
/// resolves when the watch should end (a terminal's Ctrl-C).
pub struct StopOn<'a, U, F> {
    ui: &'a mut U,
    stop: Pin<&'a mut F>,
}

impl<'a, U, F> StopOn<'a, U, F> {
    /// Shows through `ui`; ends when `stop` resolves.
    pub fn new(ui: &'a mut U, stop: Pin<&'a mut F>) -> StopOn<'a, U, F> {
        StopOn { ui, stop }
    }
}

impl<U, F> core::fmt::Debug for StopOn<'_, U, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StopOn")
    }
}

impl<U: Ui, F> Ui for StopOn<'_, U, F> {
    type Error = U::Error;
    fn event(&mut self, p: &dyn KvStore, e: Event) -> core::result::Result<(), U::Error> {
        self.ui.event(p, e)
    }
    fn notice(&mut self, n: Notice<'_, U::Error>) {
        self.ui.notice(n);
    }
}

impl<N: Connect, U: Ui, F: core::future::Future<Output = ()>> Shell<N> for StopOn<'_, U, F> {
    type Request = core::convert::Infallible;
    async fn next_request(&mut self) -> Option<core::convert::Infallible> {
        self.stop.as_mut().await;
        None
    }
    async fn handle(
        &mut self,
        _: &mut dyn KvStore,
        _: &mut Links<N>,
        request: core::convert::Infallible,
    ) -> core::result::Result<Handled, U::Error> {
        match request {}
    }
}

/// Counts from one collection or watch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Message items fetched.
    pub received: usize,
    /// Loop cover packets that came back.
    pub loops_back: usize,
    /// Cover packets sent (watch only).
    pub cover_sent: u64,
}

impl Collected {
    fn add(&mut self, received: usize, loops_back: usize) {
        self.received = self.received.saturating_add(received);
        self.loops_back = self.loops_back.saturating_add(loops_back);
    }
}

/// Fetches `qs` (queues on one relay) over `conn` through the engine's
/// fetch flow, then sends the receipts owed — also when the fetch stopped
/// on an error, for what was already processed.
pub async fn fetch_and_confirm<N: Connect + Clone, L: Link, R: Runtime, U: Ui>(
    p: &mut dyn KvStore,
    conn: &mut Connection<L, R>,
    qs: &[OwnQueue],
    links: &mut Links<N>,
    ui: &mut U,
    counts: &mut Collected,
) -> core::result::Result<(), U::Error> {
    let (got, r) = fetch_on(p, conn, qs, |p, e| ui.event(p, e)).await;
    counts.add(got.received, got.loops_back);
    send_receipts(p, links, got.receipts).await?;
    r
}

/// Connects to the relay of `qs` (queues on one relay), fetches what
/// waits in each, confirms, and closes.
pub async fn fetch_relay<N: Connect + Clone, U: Ui>(
    p: &mut dyn KvStore,
    qs: &[OwnQueue],
    links: &mut Links<N>,
    ui: &mut U,
    counts: &mut Collected,
) -> core::result::Result<(), U::Error> {
    let Some(first) = qs.first() else {
        return Ok(());
    };
    let net = links.connector().clone();
    let mut conn = net.connect(&first.relay).await.map_err(ClientError::from)?;
    fetch_and_confirm(p, &mut conn, qs, links, ui, counts).await?;
    conn.close().await.map_err(ClientError::from)?;
    Ok(())
}

/// Opens the lasting connection to the watched relay and subscribes to
/// its queues.
async fn subscribe<N: Connect>(net: &N, relay: &RelayAddress, qs: &[OwnQueue]) -> Result<Conn<N>> {
    let mut conn = net.connect(relay).await?;
    for q in qs {
        conn.subscribe(&q.recipient_id, &q.queue_key).await?;
    }
    Ok(conn)
}

/// The next notification on the lasting connection; never resolves
/// while there is none.
async fn next_notification<L: Link, R: Runtime>(
    conn: &mut Option<Connection<L, R>>,
) -> core::result::Result<QueueId, NetError> {
    match conn.as_mut() {
        Some(c) => c.next_notification().await,
        None => core::future::pending().await,
    }
}

/// A failure of the store (or a bug) is passed on; one from the network
/// is shown and the loop goes on.
fn or_notice<U: Ui>(
    ui: &mut U,
    step: Step,
    r: core::result::Result<(), U::Error>,
) -> core::result::Result<(), U::Error> {
    match r {
        Err(e) if is_local_failure(&e) => Err(e),
        Err(e) => {
            ui.notice(Notice::Failed(step, &e));
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// What woke the watch loop while it waited.
enum Woke<R> {
    Notified(core::result::Result<QueueId, NetError>),
    Timer,
    Request(R),
    Stop,
}

/// The runtime's monotonic clock as the engine counts it.
fn millis(d: Duration) -> Millis {
    Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The watch loop for `plan` with `cfg`: the engine's [`Watcher`] says
/// what to do next and when to wake; this carries each task out and
/// reports back, and carries out the shell's requests as they come, until
/// the shell has none left. Everything sent — the shell's messages,
/// receipts, resends, cover — leaves through `links`, made by its
/// connector, which also makes the one lasting connection to the watched
/// relay. Ends with an error only when the first connection fails (unless
/// the shell keeps trying), the store fails, or a bug.
pub async fn watch<N: Connect + Clone, U: Shell<N>>(
    p: &mut dyn KvStore,
    links: &mut Links<N>,
    plan: Plan,
    cfg: WatchConfig,
    ui: &mut U,
) -> core::result::Result<Collected, U::Error> {
    let net = links.connector().clone();
    let rt = net.runtime().clone();
    let clock = || millis(rt.monotonic());
    let mut w = Watcher::new(plan, cfg, clock(), &mut RuntimeRng(&rt));
    if ui.keep_trying() {
        w = w.keep_trying();
    }
    let mut conn: Option<Conn<N>> = None;
    let mut counts = Collected::default();
    loop {
        // The first message, receipt or cover packet through the onion
        // network made the acknowledgement queue: subscribe to it before
        // anything else (else acknowledgements would wait there unheard).
        if links.take_made_queue() {
            replan::<N, U::Error>(p, &mut w, &mut conn).await?;
        }
        while let Some(task) = w.poll_action() {
            // What to report, and the network error behind it.
            let (input, err): (WatchInput, Option<U::Error>) = match task {
                Task::Connect { relay, queues } => match subscribe(&net, relay, queues).await {
                    Ok(c) => {
                        conn = Some(c);
                        (WatchInput::Connected, None)
                    }
                    Err(e) if is_local_failure(&e) => return Err(e.into()),
                    Err(e) => (WatchInput::ConnectFailed, Some(e.into())),
                },
                Task::FetchHome { queues } => {
                    let r = match conn.as_mut() {
                        Some(c) => fetch_and_confirm(p, c, queues, links, ui, &mut counts).await,
                        None => Err(ClientError::from(NetError::Closed).into()),
                    };
                    match r {
                        Ok(()) => continue,
                        Err(e) if is_local_failure(&e) => return Err(e),
                        Err(e) => (WatchInput::Lost, Some(e)),
                    }
                }
                Task::Ping => {
                    let r = match conn.as_mut() {
                        Some(c) => c.ping().await,
                        None => Err(NetError::Closed),
                    };
                    match r {
                        Ok(()) => continue,
                        Err(e) => (WatchInput::Lost, Some(ClientError::from(e).into())),
                    }
                }
                Task::FetchOther { queues } => {
                    let r = fetch_relay(p, queues, links, ui, &mut counts).await;
                    or_notice(ui, Step::PollOther, r)?;
                    continue;
                }
                Task::Resend => {
                    // What could not leave before (the network was down
                    // when it was sent) goes first.
                    if !p.outbox().map_err(ClientError::from)?.is_empty() {
                        let r = flush_outbox(p, links).await;
                        or_notice(ui, Step::Resend, r.map_err(U::Error::from))?;
                    }
                    let r = resend_round(p, links, cfg.ack_timeout_ms).await;
                    match r {
                        Ok(round) => ui.notice(Notice::Resent(round)),
                        Err(e) => or_notice(ui, Step::Resend, Err(e.into()))?,
                    }
                    continue;
                }
                Task::Cover => {
                    let r = async { links.get(p).await?.send_cover(p).await }.await;
                    match r {
                        Ok(true) => {
                            counts.cover_sent = counts.cover_sent.saturating_add(1);
                            ui.notice(Notice::CoverSent(counts.cover_sent));
                        }
                        Ok(false) => {}
                        Err(e) => or_notice(ui, Step::Cover, Err(e.into()))?,
                    }
                    continue;
                }
            };
            if input == WatchInput::Lost {
                // Dropped, not closed: it is broken.
                conn = None;
            }
            match (w.handle(clock(), input), err) {
                (Reaction::Started, _) => {
                    let plan = w.plan();
                    ui.notice(Notice::Started {
                        watched: plan.watched.len(),
                        polled: plan.polled_queues(),
                    });
                }
                (Reaction::Reconnected, _) => ui.notice(Notice::Reconnected),
                (Reaction::GiveUp, e) => {
                    return Err(e.unwrap_or_else(|| ClientError::from(NetError::Closed).into()));
                }
                (Reaction::RetryIn(_), Some(e)) if input == WatchInput::Lost => {
                    ui.notice(Notice::Lost(&e));
                }
                (Reaction::RetryIn(_), Some(e)) => ui.notice(Notice::OutOfReach(&e)),
                _ => {}
            }
        }
        if links.take_made_queue() {
            replan::<N, U::Error>(p, &mut w, &mut conn).await?;
            continue;
        }
        let wait = Duration::from_millis(w.poll_timeout().0.saturating_sub(clock().0));
        let woke = {
            // Cancel-safe: a link's `recv` loses no frame when dropped,
            // and the shell's `next_request` loses no request.
            let notified = pin!(next_notification(&mut conn));
            let timer = pin!(rt.sleep(wait));
            let request = pin!(ui.next_request());
            match select(notified, select(timer, request)).await {
                Either::Left((n, _)) => Woke::Notified(n),
                Either::Right((Either::Left(_), _)) => Woke::Timer,
                Either::Right((Either::Right((Some(r), _)), _)) => Woke::Request(r),
                Either::Right((Either::Right((None, _)), _)) => Woke::Stop,
            }
        };
        match woke {
            Woke::Notified(Ok(rid)) => {
                w.handle(clock(), WatchInput::Notified(rid));
            }
            Woke::Notified(Err(e)) => {
                // Dropped: reconnect, resubscribe and fetch.
                ui.notice(Notice::Lost(&ClientError::from(e).into()));
                conn = None;
                w.handle(clock(), WatchInput::Lost);
            }
            Woke::Timer => w.handle_timeout(clock(), &mut RuntimeRng(&rt)),
            Woke::Request(r) => match ui.handle(p, links, r).await {
                Ok(Handled::Done) => {}
                Ok(Handled::QueuesChanged) => replan::<N, U::Error>(p, &mut w, &mut conn).await?,
                Err(e) if is_local_failure(&e) => return Err(e),
                // A request that failed on the network was shown by the
                // shell; the loop goes on.
                Err(_) => {}
            },
            Woke::Stop => break,
        }
    }
    if let Some(c) = conn {
        c.close().await.map_err(ClientError::from)?;
    }
    Ok(counts)
}

/// The watch follows the profile's queues as they are now; a changed
/// subscription drops the lasting connection (the watcher makes it again
/// at once).
async fn replan<N: Connect, E: From<ClientError>>(
    p: &dyn KvStore,
    w: &mut Watcher,
    conn: &mut Option<Conn<N>>,
) -> core::result::Result<(), E> {
    let plan = watch_plan(p).map_err(E::from)?.unwrap_or_else(Plan::empty);
    if w.replan(plan)
        && let Some(c) = conn.take()
    {
        let _ = c.close().await;
    }
    Ok(())
}

/// Fetches every queue once, one connection per relay.
pub async fn collect<N: Connect + Clone, U: Ui>(
    p: &mut dyn KvStore,
    links: &mut Links<N>,
    ui: &mut U,
) -> core::result::Result<Collected, U::Error> {
    let mut counts = Collected::default();
    let queues = courier::own_queues(p).map_err(ClientError::from)?;
    for qs in postern_engine::watch::by_relay(queues) {
        fetch_relay(p, &qs, links, ui, &mut counts).await?;
    }
    Ok(counts)
}

/// The settings of a watch: cover only through an onion network.
pub fn watch_config(
    ack_timeout_ms: u64,
    cover_per_minute: u32,
    onion: bool,
    others_poll: Duration,
) -> WatchConfig {
    WatchConfig {
        ack_timeout_ms,
        cover_per_minute: if onion { cover_per_minute } else { 0 },
        others_poll_ms: Some(millis(others_poll).0),
        keepalive_ms: millis(postern_link::KEEPALIVE_INTERVAL).0,
    }
}

/// The plan of a watch, from the profile's queues and home relay; `None`
/// when it has no queue yet.
pub fn watch_plan(p: &dyn KvStore) -> Result<Option<Plan>> {
    let home = transport::home(p)?;
    Ok(postern_engine::watch::plan(
        courier::own_queues(p)?,
        home.as_ref(),
    ))
}
