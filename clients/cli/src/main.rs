//! `postern`: the command-line Postern client.
//!
//! A thin shell: every protocol decision is made by `postern-core`
//! (`courier`, `e2e`, `message`, `attachment`), state lives in the
//! encrypted profile (`postern-store`), and `postern-net` carries blobs
//! to and from relays. This file parses arguments, moves bytes between
//! those three and prints what happened.

// A command-line program: printing to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_core::courier::{self, Outgoing};
use postern_core::crypto::kdf::KdfParams;
use postern_core::e2e::{self, Verification};
use postern_core::error::HasKind;
use postern_core::message::{Body, Envelope, Text};
use postern_core::store::ChangeSet;
use postern_core::{Address, ErrorKind, KvStore, RelayAddress, attachment, settings};
use postern_engine::attach::{Attachment, queue_attachment};
use postern_engine::contact::{AcceptFlow, InviteFlow};
use postern_engine::flow::FlowError;
use postern_engine::inbox::{self, Receipts};
use postern_engine::outbox;
use postern_engine::watch::{self, Reaction, Task, WatchInput, Watcher};
use postern_engine::{Millis, WatchConfig};
use postern_native::flow::fetch_on;
use postern_native::transport::{self, Links, Transport, put_all};
use postern_native::{NativeError, is_local_failure, now};
use postern_net::{Connection, Connector, NetError};
use postern_store::{Profile, ProfileError, Unlock};

/// Environment variable holding the profile passphrase (otherwise the OS
/// keychain holds the profile key).
const PASSPHRASE_ENV: &str = "POSTERN_PASSPHRASE";
/// Cover packets per minute `watch` sends by default (modest: about one
/// every ten seconds).
const DEFAULT_COVER_PER_MINUTE: u32 = 6;
/// Messages `history` shows by default.
const DEFAULT_HISTORY: usize = 50;
/// How often `watch` fetches from relays other than the home relay (s).
const DEFAULT_OTHER_RELAYS_POLL_SECS: u64 = 30;
/// How far back attachment names are looked up when a transfer completes.
const NAME_LOOKUP_MESSAGES: usize = 10_000;

#[derive(Parser, Debug)]
#[command(
    name = "postern",
    version,
    about = "Postern: private, asynchronous messaging"
)]
struct Cli {
    /// Profile directory.
    #[arg(long, env = "POSTERN_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// How long to wait for an onion delivery acknowledgement before
    /// sending a blob again over another path (milliseconds).
    #[arg(long, env = "POSTERN_ACK_TIMEOUT_MS", global = true, default_value_t = transport::DEFAULT_ACK_TIMEOUT_MS)]
    ack_timeout_ms: u64,
    /// Connect to relays from this local IP address (a machine with
    /// several addresses or interfaces).
    #[arg(long, env = "POSTERN_SOURCE_ADDR", global = true)]
    source_addr: Option<std::net::IpAddr>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new profile and identity.
    Init {
        /// The name you suggest to contacts.
        #[arg(long, default_value = "")]
        name: String,
        /// Your home relay (`postern-relay://host:port#pin`).
        #[arg(long)]
        relay: Option<String>,
    },
    /// Show or set the home relay.
    Relay {
        /// New home relay address; without it, show the current one.
        address: Option<String>,
    },
    /// Send through an onion network: pin its directory authorities.
    Network {
        /// A directory authority's public key (base64url); repeat for several.
        #[arg(long = "authority")]
        authorities: Vec<String>,
        /// How many authorities must sign the directory.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// Relays per path (3 to 5).
        #[arg(long, default_value_t = 3)]
        hops: u8,
    },
    /// Make a one-time invitation (link and QR code).
    Invite {
        /// Also write the QR code as a PNG image.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Also write the QR code as an SVG image.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print only the link.
        #[arg(long)]
        quiet: bool,
    },
    /// Accept an invitation link.
    Accept {
        /// The `postern:` link.
        link: String,
    },
    /// List contacts.
    Contacts,
    /// Send a text message.
    Send {
        /// Contact name or address prefix.
        contact: String,
        /// The text.
        text: String,
    },
    /// Send a file (images are re-encoded without metadata).
    SendFile {
        /// Contact name or address prefix.
        contact: String,
        /// The file.
        path: PathBuf,
        /// Send as a voice clip (Opus in Ogg).
        #[arg(long)]
        voice: bool,
    },
    /// Fetch, decrypt and store new messages; send what waits in the outbox.
    Sync {
        /// Where received attachments are saved (default: PROFILE/downloads).
        #[arg(long)]
        downloads: Option<PathBuf>,
    },
    /// Stay connected and receive messages as they arrive.
    Watch {
        /// Where received attachments are saved (default: PROFILE/downloads).
        #[arg(long)]
        downloads: Option<PathBuf>,
        /// Cover packets sent per minute on average (a Poisson process),
        /// indistinguishable from real ones on the wire; 0 turns them off.
        #[arg(long, default_value_t = DEFAULT_COVER_PER_MINUTE)]
        cover_per_minute: u32,
        /// How often queues on relays other than the home relay (left from
        /// an earlier home) are fetched, in seconds; the home relay's
        /// queues are watched continuously.
        #[arg(long, default_value_t = DEFAULT_OTHER_RELAYS_POLL_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        poll_secs: u64,
    },
    /// Show the conversation with a contact.
    History {
        /// Contact name or address prefix.
        contact: String,
        /// How many messages.
        #[arg(long, default_value_t = DEFAULT_HISTORY)]
        limit: usize,
    },
    /// Show the safety number, or verify a contact by scanning theirs.
    Verify {
        /// Contact name or address prefix.
        contact: String,
        /// A photo or screenshot of the contact's safety-number QR code.
        #[arg(long)]
        scan: Option<PathBuf>,
        /// Write our safety-number QR code as a PNG image.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Mark verified after comparing the 60 digits by other means.
        #[arg(long, conflicts_with = "scan")]
        confirm: bool,
    },
}

/// Everything that can make the CLI fail, with a message for the user.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("{0}")]
    Core(#[from] postern_core::Error),
    #[error("relay: {0}")]
    Net(#[from] NetError),
    #[error("{0}")]
    Flow(FlowError),
    #[error("{0}")]
    Native(NativeError),
    #[error("{0}")]
    Usage(String),
    /// Something only the user can settle (a safety number that does not
    /// match, a contact's identity key that changed).
    #[error("{0}")]
    Decision(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<postern_core::StoreError> for CliError {
    fn from(e: postern_core::StoreError) -> CliError {
        CliError::Core(e.into())
    }
}

impl From<NativeError> for CliError {
    fn from(e: NativeError) -> CliError {
        match e {
            NativeError::Core(e) => CliError::Core(e),
            NativeError::Net(e) => CliError::Net(e),
            NativeError::Flow(e) => e.into(),
            e => CliError::Native(e),
        }
    }
}

impl From<FlowError> for CliError {
    fn from(e: FlowError) -> CliError {
        match e {
            FlowError::Core(e) => CliError::Core(e),
            // Said as every other refusal is.
            FlowError::Refused(code) => CliError::Net(NetError::Relay(code)),
            e => CliError::Flow(e),
        }
    }
}

impl HasKind for CliError {
    fn kind(&self) -> ErrorKind {
        match self {
            CliError::Profile(e) => e.kind(),
            CliError::Core(e) => e.kind(),
            CliError::Net(e) => e.kind(),
            CliError::Flow(e) => e.kind(),
            CliError::Native(e) => e.kind(),
            CliError::Usage(_) | CliError::Io { .. } => ErrorKind::Usage,
            CliError::Decision(_) => ErrorKind::NeedsUserDecision,
        }
    }
}

/// The process's exit status for an error of this kind (documented in
/// the CLI's README; scripts may rely on them).
fn exit_status(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage => exit::USAGE,
        ErrorKind::NeedsUserDecision => exit::DECISION,
        ErrorKind::Network => exit::NETWORK,
        ErrorKind::Storage => exit::STORAGE,
        ErrorKind::PeerMisbehaved => exit::REJECTED,
        _ => exit::BUG,
    }
}

/// Exit statuses, one per kind of error.
mod exit {
    /// A wrong command, argument, contact name or passphrase (also clap's
    /// status for a command line it cannot parse).
    pub const USAGE: u8 = 2;
    /// Needs a decision by the user: a safety number that does not match,
    /// a contact whose identity key changed.
    pub const DECISION: u8 = 3;
    /// A relay could not be reached, timed out or refused for now; what
    /// was being sent waits in the outbox.
    pub const NETWORK: u8 = 4;
    /// The profile could not be read or written.
    pub const STORAGE: u8 = 5;
    /// An input (a link, a file, a relay's answer) was invalid or hostile
    /// and was rejected.
    pub const REJECTED: u8 = 6;
    /// A bug in Postern (please report it).
    pub const BUG: u8 = 70;
}

/// What every command that talks to relays carries: how connections are
/// made, and what `watch` counts while it runs.
#[derive(Debug, Default)]
struct Ctx {
    net: Connector,
    /// Loop cover packets that came back in this run.
    loops_back: std::cell::Cell<usize>,
}

type Result<T> = core::result::Result<T, CliError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cx = Ctx {
        net: Connector {
            source_address: cli.source_addr,
        },
        ..Ctx::default()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(exit::BUG);
        }
    };
    match rt.block_on(run(cli, &cx)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_status(e.kind()))
        }
    }
}

fn profile_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.profile {
        return Ok(p.clone());
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| CliError::Usage("set --profile or HOME".into()))?;
    Ok(PathBuf::from(home).join(".local/share/postern"))
}

fn with_unlock<T>(f: impl FnOnce(Unlock<'_>) -> Result<T>) -> Result<T> {
    match std::env::var(PASSPHRASE_ENV) {
        Ok(pw) => {
            let pw = zeroize::Zeroizing::new(pw);
            f(Unlock::Passphrase(pw.as_bytes()))
        }
        Err(_) => {
            postern_store::use_platform_keychain()?;
            f(Unlock::Keychain)
        }
    }
}

fn open(cli: &Cli) -> Result<Profile> {
    let dir = profile_dir(cli)?;
    with_unlock(|u| Ok(Profile::open(&dir, u)?))
}

fn commit(p: &mut Profile, cs: ChangeSet) -> Result<()> {
    p.commit(cs)?;
    Ok(())
}

async fn run(cli: Cli, cx: &Ctx) -> Result<()> {
    match &cli.command {
        Cmd::Init { name, relay } => init(&cli, name, relay.as_deref()),
        Cmd::Relay { address } => relay_cmd(&cli, address.as_deref()),
        Cmd::Network {
            authorities,
            threshold,
            hops,
        } => network_cmd(&cli, cx, authorities, *threshold, *hops).await,
        Cmd::Invite { png, svg, quiet } => {
            invite(&cli, cx, png.as_deref(), svg.as_deref(), *quiet).await
        }
        Cmd::Accept { link } => accept(&cli, cx, link).await,
        Cmd::Contacts => contacts(&cli),
        Cmd::Send { contact, text } => send_text(&cli, cx, contact, text).await,
        Cmd::SendFile {
            contact,
            path,
            voice,
        } => send_file(&cli, cx, contact, path, *voice).await,
        Cmd::Sync { downloads } => {
            let mut p = open(&cli)?;
            let dl = downloads_dir(&p, downloads.as_deref());
            let mut links = Links::new(cx.net);
            let r = async {
                flush_outbox(&mut p, &mut links).await?;
                sync(&mut p, cx, &dl, &mut links).await?;
                resend(&mut p, &mut links, cli.ack_timeout_ms).await
            }
            .await;
            links.close().await;
            r
        }
        Cmd::Watch {
            downloads,
            cover_per_minute,
            poll_secs,
        } => {
            let mut p = open(&cli)?;
            let dl = downloads_dir(&p, downloads.as_deref());
            let poll = std::time::Duration::from_secs(*poll_secs);
            watch(&mut p, cx, &dl, cli.ack_timeout_ms, *cover_per_minute, poll).await
        }
        Cmd::History { contact, limit } => history(&cli, contact, *limit),
        Cmd::Verify {
            contact,
            scan,
            png,
            confirm,
        } => verify(&cli, contact, scan.as_deref(), png.as_deref(), *confirm),
    }
}

fn downloads_dir(p: &Profile, arg: Option<&Path>) -> PathBuf {
    arg.map_or_else(|| p.dir().join("downloads"), Path::to_path_buf)
}

fn init(cli: &Cli, name: &str, relay: Option<&str>) -> Result<()> {
    let dir = profile_dir(cli)?;
    let mut p = with_unlock(|u| Ok(Profile::create(&dir, u, KdfParams::DEFAULT)?))?;
    let mut rng = rand::rng();
    let (addr, cs) = e2e::create_identity(&p, now(), &mut rng)?;
    commit(&mut p, cs)?;
    commit(&mut p, settings::set_display_name(name)?)?;
    if let Some(r) = relay {
        commit(&mut p, settings::set_home_relay(&RelayAddress::parse(r)?))?;
    }
    println!("created profile in {}", dir.display());
    println!("your address: {addr}");
    Ok(())
}

fn relay_cmd(cli: &Cli, address: Option<&str>) -> Result<()> {
    let mut p = open(cli)?;
    match address {
        Some(a) => {
            let r = RelayAddress::parse(a)?;
            commit(&mut p, settings::set_home_relay(&r))?;
            println!("home relay: {r}");
        }
        None => match settings::home_relay(&p)? {
            Some(r) => println!("{r}"),
            None => {
                return Err(CliError::Usage(
                    "no home relay set (postern relay <address>)".into(),
                ));
            }
        },
    }
    Ok(())
}

async fn network_cmd(
    cli: &Cli,
    cx: &Ctx,
    authorities: &[String],
    threshold: u32,
    hops: u8,
) -> Result<()> {
    let mut p = open(cli)?;
    if authorities.is_empty() {
        match settings::network(&p)? {
            None => println!("direct: blobs go straight to each contact's relay"),
            Some(n) => println!(
                "onion network: {} authority key(s), {} signature(s) required, {} hops per path",
                n.authorities.len(),
                n.threshold,
                n.hops
            ),
        }
        return Ok(());
    }
    let mut keys = Vec::new();
    for a in authorities {
        let k = data_encoding::BASE64URL_NOPAD
            .decode(a.trim().as_bytes())
            .map_err(|_| CliError::Usage(format!("{a:?} is not a base64url key")))?;
        postern_core::crypto::signal::AuthorityPublic::from_bytes(&k)?;
        keys.push(k);
    }
    let n = settings::NetworkSettings {
        authorities: keys,
        threshold,
        hops,
    };
    commit(&mut p, settings::set_network(&n)?)?;
    let home = home_relay(&p)?;
    match transport::directory(&mut p, &home, &cx.net).await? {
        Some((d, hops)) => println!(
            "onion network {:?}: {} relays, {hops} hops per path, directory valid until {}",
            d.network,
            d.relays.len(),
            output::time(d.valid_until)
        ),
        None => println!("no network configured"),
    }
    Ok(())
}

fn home_relay(p: &Profile) -> Result<RelayAddress> {
    settings::home_relay(p)?
        .ok_or_else(|| CliError::Usage("no home relay set (postern relay <address>)".into()))
}

async fn invite(
    cli: &Cli,
    cx: &Ctx,
    png: Option<&Path>,
    svg: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let mut p = open(cli)?;
    let relay = home_relay(&p)?;
    let name = settings::display_name(&p)?;
    let mut flow = InviteFlow::new(relay.clone(), name, &mut rand::rng())?;
    postern_native::flow::drive(&mut p, &cx.net, &relay, &mut flow).await?;
    let link = flow
        .invitation()
        .ok_or(CliError::Flow(FlowError::OutOfOrder))?
        .to_link();
    if quiet {
        println!("{link}");
    } else {
        let qr = postern_core::qr::encode(link.as_bytes())?;
        println!("{}", qr.to_terminal());
        println!("{link}");
        println!(
            "one-time invitation, valid for 7 days ({} characters)",
            link.len()
        );
    }
    if let Some(path) = png {
        output::write_qr_png(&postern_core::qr::encode(link.as_bytes())?, path)?;
    }
    if let Some(path) = svg {
        std::fs::write(path, postern_core::qr::svg(link.as_bytes())?).map_err(io_err(path))?;
    }
    Ok(())
}

async fn accept(cli: &Cli, cx: &Ctx, link: &str) -> Result<()> {
    let mut p = open(cli)?;
    let relay = home_relay(&p)?;
    let name = settings::display_name(&p)?;
    let mut flow = AcceptFlow::from_link(relay.clone(), name, link, now())?;
    postern_native::flow::drive(&mut p, &cx.net, &relay, &mut flow).await?;
    let peer = *flow
        .contact()
        .ok_or(CliError::Flow(FlowError::OutOfOrder))?;
    let who = courier::route(&p, &peer)?
        .map(|r| r.display_name)
        .unwrap_or_default();
    println!("added contact {} ({peer})", output::name_or(&who, &peer));
    println!(
        "compare safety numbers with `postern verify {}`",
        output::name_or(&who, &peer)
    );
    Ok(())
}

/// Sends an outbox entry's blobs and removes it from the outbox.
async fn deliver(p: &mut Profile, t: &mut Transport, id: [u8; 16], out: &Outgoing) -> Result<()> {
    put_all(p, t, out).await?;
    Ok(outbox::sent(p, id)?)
}

/// Sends whatever an earlier run committed but could not send.
async fn flush_outbox(p: &mut Profile, links: &mut Links) -> Result<()> {
    for (id, out) in outbox::waiting(p)? {
        let t = links.get(p).await?;
        deliver(p, t, id, &out).await?;
    }
    Ok(())
}

fn contacts(cli: &Cli) -> Result<()> {
    let p = open(cli)?;
    let list = e2e::contacts(&p)?;
    if list.is_empty() {
        println!("no contacts yet (postern invite / postern accept)");
    }
    for c in list {
        let name = courier::route(&p, &c.address)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        let v = match c.verification {
            Verification::Verified => "verified",
            _ => "not verified",
        };
        println!(
            "{}  {}  ({v})",
            output::name_or(&name, &c.address),
            c.address
        );
    }
    Ok(())
}

/// Finds a contact by display name (case-insensitive) or address prefix.
fn resolve(p: &Profile, query: &str) -> Result<(Address, String)> {
    let mut hits = Vec::new();
    for c in e2e::contacts(p)? {
        let name = courier::route(p, &c.address)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        let by_name = !name.is_empty() && name.eq_ignore_ascii_case(query);
        let by_addr = query.len() >= 4 && c.address.to_string().starts_with(&query.to_lowercase());
        if by_name || by_addr {
            hits.push((c.address, name));
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(CliError::Usage(format!("no contact called {query:?}"))),
        _ => Err(CliError::Usage(format!(
            "{query:?} matches several contacts; use an address prefix"
        ))),
    }
}

/// Seals a body for `peer`, commits it with an outbox entry, sends it.
async fn send_body(
    p: &mut Profile,
    t: &mut Transport,
    peer: &Address,
    body: Body,
) -> Result<Envelope> {
    let (env, out) = outbox::queue(p, peer, body, None, now(), &mut rand::rng())?;
    queued_hint(deliver(p, t, env.id, &out).await)?;
    Ok(env)
}

/// Passes on a failed delivery, saying that what failed is safe in the
/// outbox (it was committed before sending began).
fn queued_hint(r: Result<()>) -> Result<()> {
    if r.is_err() {
        eprintln!("note: the message is kept in the outbox; `postern sync` sends it");
    }
    r
}

async fn send_text(cli: &Cli, cx: &Ctx, contact: &str, text: &str) -> Result<()> {
    let mut p = open(cli)?;
    let (peer, name) = resolve(&p, contact)?;
    let home = transport::home(&p)?;
    let mut t = Transport::for_profile(&mut p, home.as_ref(), &cx.net).await?;
    let sent = send_body(&mut p, &mut t, &peer, Body::Text(Text(text.to_owned()))).await;
    let via = if t.is_onion() { " (onion)" } else { "" };
    t.close().await;
    sent?;
    println!("you → {}: {text}{via}", output::name_or(&name, &peer));
    Ok(())
}

async fn send_file(cli: &Cli, cx: &Ctx, contact: &str, path: &Path, voice: bool) -> Result<()> {
    let mut p = open(cli)?;
    let (peer, name) = resolve(&p, contact)?;
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    if len > postern_core::consts::MAX_ATTACHMENT_BYTES {
        return Err(postern_core::Error::TooLarge {
            what: "attachment",
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(postern_core::consts::MAX_ATTACHMENT_BYTES).unwrap_or(usize::MAX),
        }
        .into());
    }
    let raw = std::fs::read(path).map_err(io_err(path))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let a = Attachment::from_file(raw, file_name, voice)?;
    let kind = a.kind();
    let home = transport::home(&p)?;
    let mut t = Transport::for_profile(&mut p, home.as_ref(), &cx.net).await?;
    // The message, its ratchet step and every chunk go into the outbox in
    // one commit: an interrupted transfer is finished by `postern sync`.
    let queued = queue_attachment(&mut p, &peer, a, now(), &mut rand::rng())?;
    let total = attachment::chunk_count(queued.attachment.size)?;
    let blobs: usize = queued.entries.iter().map(|(_, o)| o.blobs.len()).sum();
    let bar = output::progress(blobs as u64, "sending");
    let sent = async {
        for (id, out) in &queued.entries {
            deliver(&mut p, &mut t, *id, out).await?;
            bar.inc(out.blobs.len() as u64);
        }
        Ok::<(), CliError>(())
    }
    .await;
    bar.finish_and_clear();
    t.close().await;
    queued_hint(sent)?;
    println!(
        "you → {}: {kind} ({} bytes, {total} chunks)",
        output::name_or(&name, &peer),
        queued.attachment.size
    );
    Ok(())
}

/// Fetches and processes every queue once, one connection per relay.
async fn sync(p: &mut Profile, cx: &Ctx, dl: &Path, links: &mut Links) -> Result<()> {
    let mut received = 0usize;
    for qs in watch::by_relay(courier::own_queues(p)?) {
        received += drain_relay(p, cx, &qs, dl, links).await?;
    }
    if received == 0 {
        println!("no new messages");
    }
    Ok(())
}

/// Sends again whatever the onion network has not acknowledged in time.
async fn resend(p: &mut Profile, links: &mut Links, timeout_ms: u64) -> Result<()> {
    if p.keys(postern_core::store::Namespace::PendingAck)?
        .is_empty()
    {
        return Ok(());
    }
    let t = links.get(p).await?;
    let r = transport::resend_overdue(p, t, timeout_ms).await?;
    if r.resent > 0 {
        println!(
            "resent {} packet(s) not yet acknowledged, over new paths",
            r.resent
        );
    }
    if r.failed > 0 {
        eprintln!(
            "note: {} packet(s) found no working path now; tried again later",
            r.failed
        );
    }
    if r.gave_up > 0 {
        eprintln!("warning: {} packet(s) could not be delivered", r.gave_up);
    }
    let cutoff = postern_engine::route::lost_loop_cutoff(now(), timeout_ms);
    let (lost, cs) = courier::lost_loops(p, cutoff)?;
    commit(p, cs)?;
    if lost > 0 {
        eprintln!(
            "warning: {lost} loop cover packet(s) did not come back (failing or hostile relays?)"
        );
    }
    let waiting = courier::unacknowledged(p)?;
    if waiting > 0 {
        println!("{waiting} packet(s) wait for a delivery acknowledgement");
    }
    Ok(())
}

/// Tells each contact which of its messages arrived (the engine makes one
/// receipt message per `MAX_RECEIPT_IDS` ids).
async fn send_receipts(p: &mut Profile, links: &mut Links, receipts: Receipts) -> Result<()> {
    for (peer, body) in inbox::receipt_bodies(receipts) {
        let t = links.get(p).await?;
        send_body(p, t, &peer, body).await?;
    }
    Ok(())
}

/// Prints one event from the inbox; a complete attachment is saved.
fn show(p: &Profile, e: inbox::Event, dl: &Path) -> Result<()> {
    let name = |from: &Address| -> Result<String> {
        let n = courier::route(p, from)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        Ok(output::name_or(&n, from))
    };
    match e {
        inbox::Event::NewContact {
            peer,
            display_name,
            early,
        } => {
            let who = output::name_or(&display_name, &peer);
            println!("{who} accepted your invitation ({peer})");
            for e in early {
                if let Some(line) = output::describe(&e.body) {
                    println!("{who} → you: {line}");
                }
            }
        }
        inbox::Event::Message { from, envelope } => {
            if let Some(line) = output::describe(&envelope.body) {
                println!("{} → you: {line}", name(&from)?);
            }
        }
        inbox::Event::AttachmentReady {
            from,
            message_id,
            attachment: aref,
        } => {
            let hist = p.history(&from, NAME_LOOKUP_MESSAGES)?;
            let body = hist
                .iter()
                .find(|m| m.id == message_id)
                .and_then(|m| Envelope::decode(&m.body).ok())
                .map(|e| e.body);
            let file_name = output::download_name(body.as_ref(), &message_id);
            let path = output::save_attachment(p, &aref, dl, &file_name)?;
            println!(
                "{} → you: saved {} ({} bytes, digest checked)",
                name(&from)?,
                path.display(),
                aref.size
            );
        }
        inbox::Event::Confirmed { packets } => {
            println!("✓ {packets} packet(s) confirmed delivered through the onion network");
        }
        inbox::Event::Dropped { kind } => eprintln!("dropped a bad item ({kind:?})"),
    }
    Ok(())
}

/// Stays connected, subscribed to every queue, until interrupted.
async fn watch(
    p: &mut Profile,
    cx: &Ctx,
    dl: &Path,
    ack_timeout_ms: u64,
    cover_per_minute: u32,
    others_poll: std::time::Duration,
) -> Result<()> {
    // Listen for Ctrl-C / SIGINT / SIGTERM from the start, so a signal
    // that arrives while messages are being processed is not lost.
    let stop = stop_signal()?;
    tokio::pin!(stop);
    let mut links = Links::new(cx.net);
    let r = watching(
        p,
        cx,
        dl,
        &mut links,
        ack_timeout_ms,
        cover_per_minute,
        others_poll,
        stop,
    )
    .await;
    links.close().await;
    r
}

/// The watch loop: the engine's [`Watcher`] says what to do next and when
/// to wake; this carries each task out, reports back and prints. Everything
/// sent — the outbox, receipts, resends, cover — leaves through `links`.
#[allow(clippy::too_many_arguments)]
async fn watching(
    p: &mut Profile,
    cx: &Ctx,
    dl: &Path,
    links: &mut Links,
    ack_timeout_ms: u64,
    cover_per_minute: u32,
    others_poll: std::time::Duration,
    mut stop: std::pin::Pin<&mut impl core::future::Future<Output = ()>>,
) -> Result<()> {
    flush_outbox(p, links).await?;
    let home = transport::home(p)?;
    let Some(plan) = watch::plan(courier::own_queues(p)?, home.as_ref()) else {
        return Err(CliError::Usage(
            "no queues yet (postern invite / postern accept)".into(),
        ));
    };
    // Cover traffic goes through the onion network only.
    let cover = links.get(p).await?.is_onion() && cover_per_minute > 0;
    let origin = tokio::time::Instant::now();
    let clock = || Millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX));
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let cfg = WatchConfig {
        ack_timeout_ms,
        cover_per_minute: if cover { cover_per_minute } else { 0 },
        others_poll_ms: Some(millis(others_poll)),
        keepalive_ms: millis(postern_net::KEEPALIVE_INTERVAL),
    };
    let mut w = Watcher::new(plan, cfg, clock(), &mut rand::rng());
    let mut conn: Option<Connection> = None;
    let mut cover_sent: u64 = 0;
    loop {
        while let Some(task) = w.poll_action() {
            // What to report, and the network error behind it.
            let (input, err): (WatchInput, Option<CliError>) = match task {
                Task::Connect { relay, queues } => match subscribe(cx, relay, queues).await {
                    Ok(c) => {
                        conn = Some(c);
                        (WatchInput::Connected, None)
                    }
                    Err(e) if is_local_failure(&e) => return Err(e),
                    Err(e) => (WatchInput::ConnectFailed, Some(e)),
                },
                Task::FetchHome { queues } => {
                    let r = match conn.as_mut() {
                        Some(c) => drain(p, cx, c, queues, dl, links).await.map(|_| ()),
                        None => Err(CliError::Net(NetError::Closed)),
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
                        Err(e) => (WatchInput::Lost, Some(e.into())),
                    }
                }
                // A relay that cannot be reached now is tried again at the
                // next round; the network failing does not end `watch`.
                Task::FetchOther { queues } => {
                    note(drain_relay(p, cx, queues, dl, links).await, "")?;
                    continue;
                }
                Task::Resend => {
                    note(resend(p, links, ack_timeout_ms).await, "")?;
                    continue;
                }
                Task::Cover => {
                    let sent = async { Ok(links.get(p).await?.send_cover(p).await?) }.await;
                    if note(sent, "cover packet not sent: ")?.is_some() {
                        cover_sent += 1;
                    }
                    continue;
                }
            };
            if input == WatchInput::Lost {
                // Dropped, not closed: it is broken.
                conn = None;
            }
            let why = err.as_ref().map(ToString::to_string).unwrap_or_default();
            match w.handle(clock(), input) {
                Reaction::Started => watching_line(&w, others_poll),
                Reaction::Reconnected => println!("reconnected to your relay"),
                Reaction::GiveUp => return Err(err.unwrap_or(CliError::Net(NetError::Closed))),
                Reaction::RetryIn(_) if input == WatchInput::Lost => {
                    eprintln!("note: lost the connection to your relay ({why}); reconnecting");
                }
                Reaction::RetryIn(_) => {
                    eprintln!("note: your relay is still out of reach ({why})");
                }
                Reaction::Quiet => {}
            }
        }
        let wake = origin
            .checked_add(std::time::Duration::from_millis(w.poll_timeout().0))
            .unwrap_or(origin);
        tokio::select! {
            n = next_notification(&mut conn) => match n {
                Ok(rid) => {
                    w.handle(clock(), WatchInput::Notified(rid));
                }
                Err(e) => {
                    // Dropped: reconnect, resubscribe and fetch.
                    eprintln!("note: lost the connection to your relay ({e}); reconnecting");
                    conn = None;
                    w.handle(clock(), WatchInput::Lost);
                }
            },
            _ = tokio::time::sleep_until(wake) => w.handle_timeout(clock(), &mut rand::rng()),
            _ = &mut stop => break,
        }
    }
    if let Some(c) = conn {
        c.close().await?;
    }
    if cover {
        println!(
            "cover traffic: {cover_sent} packet(s) sent, {} loop(s) came back",
            cx.loops_back.get()
        );
    }
    Ok(())
}

/// The line that says watching has started.
fn watching_line(w: &Watcher, others_poll: std::time::Duration) {
    let plan = w.plan();
    let elsewhere = plan.polled_queues();
    if elsewhere > 0 {
        println!(
            "watching {} queue(s), and {elsewhere} on other relays every {} s; Ctrl-C to stop",
            plan.watched.len(),
            others_poll.as_secs()
        );
    } else {
        println!("watching {} queue(s); Ctrl-C to stop", plan.watched.len());
    }
}

/// A failure of the profile (or a bug) is passed on; any other, from the
/// network, is printed after `what` and the loop goes on (`None`).
fn note<T>(r: Result<T>, what: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_local_failure(&e) => Err(e),
        Err(e) => {
            eprintln!("note: {what}{e}");
            Ok(None)
        }
    }
}

/// The next notification on the home connection; never resolves while
/// there is none.
async fn next_notification(
    conn: &mut Option<Connection>,
) -> std::result::Result<postern_core::relay_proto::QueueId, postern_net::NetError> {
    match conn.as_mut() {
        Some(c) => c.next_notification().await,
        None => std::future::pending().await,
    }
}

/// Opens the lasting connection to the watched relay and subscribes to
/// its queues.
async fn subscribe(cx: &Ctx, relay: &RelayAddress, qs: &[courier::OwnQueue]) -> Result<Connection> {
    let mut conn = cx.net.connect(relay).await?;
    for q in qs {
        conn.subscribe(&q.recipient_id, &q.queue_key).await?;
    }
    Ok(conn)
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are
/// installed before this returns.
#[cfg(unix)]
fn stop_signal() -> Result<impl core::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let sig = |k| {
        signal(k).map_err(|source| CliError::Io {
            path: PathBuf::from("signal handler"),
            source,
        })
    };
    let (mut int, mut term) = (sig(SignalKind::interrupt())?, sig(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signal() -> Result<impl core::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Connects to the relay of `qs` (queues on one relay), fetches what waits
/// in each, and closes; returns how many message items came.
async fn drain_relay(
    p: &mut Profile,
    cx: &Ctx,
    qs: &[courier::OwnQueue],
    dl: &Path,
    links: &mut Links,
) -> Result<usize> {
    let Some(first) = qs.first() else {
        return Ok(0);
    };
    let mut conn = cx.net.connect(&first.relay).await?;
    let received = drain(p, cx, &mut conn, qs, dl, links).await?;
    conn.close().await?;
    Ok(received)
}

/// Fetches the queues `qs` over `conn` through the engine's fetch flow,
/// showing what came, then sends the receipts owed; returns how many
/// message items came.
async fn drain(
    p: &mut Profile,
    cx: &Ctx,
    conn: &mut Connection,
    qs: &[courier::OwnQueue],
    dl: &Path,
    links: &mut Links,
) -> Result<usize> {
    let (got, r) = fetch_on(p, conn, qs, |p, e| show(p, e, dl)).await;
    cx.loops_back
        .set(cx.loops_back.get().saturating_add(got.loops_back));
    // Receipts for what was processed go out even if a later fetch failed.
    send_receipts(p, links, got.receipts).await?;
    r.map(|()| got.received)
}

fn history(cli: &Cli, contact: &str, limit: usize) -> Result<()> {
    let p = open(cli)?;
    let (peer, name) = resolve(&p, contact)?;
    let who = output::name_or(&name, &peer);
    for m in p.history(&peer, limit)? {
        let line = Envelope::decode(&m.body)
            .ok()
            .and_then(|e| output::describe(&e.body))
            .unwrap_or_else(|| "(unreadable)".into());
        let arrow = match m.direction {
            postern_core::store::Direction::Outgoing => format!("you → {who}"),
            postern_core::store::Direction::Incoming => format!("{who} → you"),
        };
        println!("{} {arrow}: {line}", output::time(m.timestamp));
    }
    Ok(())
}

fn verify(
    cli: &Cli,
    contact: &str,
    scan: Option<&Path>,
    png: Option<&Path>,
    confirm: bool,
) -> Result<()> {
    let mut p = open(cli)?;
    let (peer, name) = resolve(&p, contact)?;
    let who = output::name_or(&name, &peer);
    if let Some(path) = scan {
        let codes = output::scan_qr(path)?;
        for code in &codes {
            let (ok, cs) = e2e::verify_scanned(&p, &peer, code)?;
            if ok {
                commit(&mut p, cs)?;
                println!("safety numbers match: {who} is verified");
                return Ok(());
            }
        }
        return Err(CliError::Decision(format!(
            "the scanned code does not match {who}'s safety number: do not trust this contact until you find out why"
        )));
    }
    if confirm {
        let cs = e2e::set_verified(&p, &peer, Verification::Verified)?;
        commit(&mut p, cs)?;
        println!("{who} marked as verified");
        return Ok(());
    }
    let sn = e2e::safety_number(&p, &peer)?;
    println!("safety number with {who}:");
    println!("{}", output::group_digits(&sn.digits));
    let qr = postern_core::qr::encode(&sn.scannable)?;
    println!("{}", qr.to_terminal());
    if let Some(path) = png {
        output::write_qr_png(&qr, path)?;
        println!("QR code written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has its own status, none is 0 or 1, and a bug is never
    /// reported as a network failure (which a script might retry).
    #[test]
    fn every_error_kind_has_a_distinct_exit_status() {
        let kinds = [
            ErrorKind::Usage,
            ErrorKind::NeedsUserDecision,
            ErrorKind::Network,
            ErrorKind::Storage,
            ErrorKind::PeerMisbehaved,
            ErrorKind::Bug,
        ];
        let codes: Vec<u8> = kinds.iter().map(|k| exit_status(*k)).collect();
        for (i, c) in codes.iter().enumerate() {
            assert!(*c > 1, "{:?}", kinds.get(i));
            assert_eq!(codes.iter().filter(|d| *d == c).count(), 1, "{c}");
        }
        assert_eq!(exit_status(ErrorKind::Bug), exit::BUG);
        let bug = CliError::Core(postern_core::Error::Bug("x"));
        assert_eq!(exit_status(bug.kind()), exit::BUG);
        assert!(is_local_failure(&bug));
        let down = CliError::Net(NetError::Timeout);
        assert_eq!(exit_status(down.kind()), exit::NETWORK);
        assert!(!is_local_failure(&down));
    }
}
