//! Runs an engine flow ([`postern_engine::flow::Flow`]) to its end.

use postern_core::courier::OwnQueue;
use postern_core::{KvStore, RelayAddress};
use postern_engine::fetch::FetchFlow;
use postern_engine::flow::{Action, Flow, FlowError, Input};
use postern_engine::inbox::{Event, Receipts};
use postern_link::{Connect, Connection, Link, Runtime, RuntimeRng};

use crate::transport::{Transport, put_all};
use crate::{ClientError, Conn, Result};

/// Runs `flow` to its end: its relay requests go as given over one
/// connection per relay (opened when first needed, all closed at the
/// end), its deliveries through a [`Transport`] for the profile (onion
/// routed when a network is configured, its directory from `home`). The
/// order of the steps, and every commit, is the flow's.
pub async fn drive<N: Connect + Clone>(
    p: &mut dyn KvStore,
    net: &N,
    home: &RelayAddress,
    flow: &mut impl Flow,
) -> Result<()> {
    let mut conns: Vec<(RelayAddress, Conn<N>)> = Vec::new();
    let r = drive_on(p, net, home, flow, &mut conns).await;
    for (_, c) in conns {
        // A failed close loses nothing: every step was answered.
        let _ = c.close().await;
    }
    r
}

async fn drive_on<N: Connect + Clone>(
    p: &mut dyn KvStore,
    net: &N,
    home: &RelayAddress,
    flow: &mut impl Flow,
    conns: &mut Vec<(RelayAddress, Conn<N>)>,
) -> Result<()> {
    let rt = net.runtime();
    loop {
        let input = match flow.poll_action() {
            None => return Ok(()),
            Some(Action::Request {
                relay,
                command,
                key,
            }) => {
                if !conns.iter().any(|(a, _)| a == relay) {
                    conns.push((relay.clone(), net.connect(relay).await?));
                }
                let conn = conns
                    .iter_mut()
                    .find_map(|(a, c)| (a == relay).then_some(c))
                    .ok_or(FlowError::OutOfOrder)?;
                Input::Answer(conn.request(command, key).await?)
            }
            Some(Action::Deliver { out, .. }) => {
                let mut t = Transport::for_profile(p, Some(home), net).await?;
                let r = put_all(p, &mut t, out).await;
                t.close().await;
                r?;
                Input::Delivered
            }
            Some(_) => return Err(FlowError::OutOfOrder.into()),
        };
        flow.handle(rt.now(), input, p, &mut RuntimeRng(rt))?;
    }
}

/// What one fetch run over a relay's queues gathered.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Message items fetched (acknowledgement queues not counted).
    pub received: usize,
    /// Loop cover packets that came back.
    pub loops_back: usize,
    /// Delivery receipts owed for what was processed.
    pub receipts: Receipts,
}

/// Fetches every queue in `queues` (all on the relay `conn` is connected
/// to) through the engine's [`FetchFlow`], calling `show` for each event
/// as it comes. What was gathered is returned even when the run stopped
/// on an error (the second half), so the receipts for what was already
/// committed still go out.
pub async fn fetch_on<L: Link, R: Runtime, E: From<ClientError>>(
    p: &mut dyn KvStore,
    conn: &mut Connection<L, R>,
    queues: &[OwnQueue],
    mut show: impl FnMut(&dyn KvStore, Event) -> core::result::Result<(), E>,
) -> (Fetched, core::result::Result<(), E>) {
    let mut flow = FetchFlow::new(queues);
    let r = fetch_steps(p, conn, &mut flow, &mut show).await;
    let fetched = Fetched {
        received: flow.received(),
        loops_back: flow.loops_back(),
        receipts: flow.take_receipts(),
    };
    (fetched, r)
}

async fn fetch_steps<L: Link, R: Runtime, E: From<ClientError>>(
    p: &mut dyn KvStore,
    conn: &mut Connection<L, R>,
    flow: &mut FetchFlow<'_>,
    show: &mut impl FnMut(&dyn KvStore, Event) -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    loop {
        let input = match flow.poll_action() {
            None => return Ok(()),
            Some(Action::Request { command, key, .. }) => Input::Answer(
                conn.request(command, key)
                    .await
                    .map_err(|e| E::from(e.into()))?,
            ),
            Some(_) => return Err(E::from(FlowError::OutOfOrder.into())),
        };
        let rt = conn.runtime();
        let handled = flow.handle(rt.now(), input, p, &mut RuntimeRng(rt));
        // What was committed is shown, whatever came after it.
        while let Some(e) = flow.poll_event() {
            show(p, e)?;
        }
        handled.map_err(|e| E::from(e.into()))?;
    }
}
