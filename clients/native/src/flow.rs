//! Runs an engine flow ([`postern_engine::contact::Flow`]) to its end.

use postern_core::RelayAddress;
use postern_engine::contact::{Action, Flow, FlowError, Input};
use postern_net::{Connection, Connector};
use postern_store::Profile;

use crate::transport::{Transport, put_all};
use crate::{Result, now};

/// Runs `flow` to its end: its relay requests go as given over one
/// connection per relay (opened when first needed, all closed at the
/// end), its deliveries through a [`Transport`] for the profile (onion
/// routed when a network is configured, its directory from `home`). The
/// order of the steps, and every commit, is the flow's.
pub async fn drive(
    p: &mut Profile,
    net: &Connector,
    home: &RelayAddress,
    flow: &mut impl Flow,
) -> Result<()> {
    let mut conns: Vec<(RelayAddress, Connection)> = Vec::new();
    let r = drive_on(p, net, home, flow, &mut conns).await;
    for (_, c) in conns {
        // A failed close loses nothing: every step was answered.
        let _ = c.close().await;
    }
    r
}

async fn drive_on(
    p: &mut Profile,
    net: &Connector,
    home: &RelayAddress,
    flow: &mut impl Flow,
    conns: &mut Vec<(RelayAddress, Connection)>,
) -> Result<()> {
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
        flow.handle(now(), input, p, &mut rand::rng())?;
    }
}
