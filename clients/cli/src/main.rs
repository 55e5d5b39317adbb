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
use postern_core::courier;
use postern_core::crypto::kdf::KdfParams;
use postern_core::e2e::{self, Verification};
use postern_core::error::HasKind;
use postern_core::message::{Body, Envelope, Text};
use postern_core::store::ChangeSet;
use postern_core::{Address, ErrorKind, KvStore, RelayAddress, attachment, settings};
use postern_engine::attach::{Attachment, queue_attachment};
use postern_engine::contact::{AcceptFlow, InviteFlow};
use postern_engine::flow::FlowError;
use postern_engine::inbox;
use postern_engine::outbox;
use postern_native::client::{self, Notice, Step};
use postern_native::files;
use postern_native::transport::{self, Links, Transport};
use postern_native::{ClientError, Native, now};
use postern_net::{Connector, NetError};
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
        /// The inviter is a contact whose identity key changed (they reset
        /// their keys): accept the new key. Compare safety numbers first,
        /// by a channel you trust.
        #[arg(long)]
        accept_new_key: bool,
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
    /// Replace this profile's identity key (same address), dropping every
    /// session: each contact then sees a safety-number change and accepts
    /// the new key from a new invitation of yours.
    ResetKeys {
        /// Confirms that every session is to be dropped.
        #[arg(long)]
        yes: bool,
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
    Client(ClientError),
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

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        match e {
            ClientError::Core(e) => CliError::Core(e),
            ClientError::Net(e) => CliError::Net(e),
            ClientError::Flow(e) => e.into(),
            e => CliError::Client(e),
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
            CliError::Client(e) => e.kind(),
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

/// What every command that talks to relays carries: the native platform
/// (how connections are made, its clock and randomness).
#[derive(Debug)]
struct Ctx {
    net: Native,
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
        net: postern_native::native(Connector {
            source_address: cli.source_addr,
        }),
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
        Cmd::Accept {
            link,
            accept_new_key,
        } => accept(&cli, cx, link, *accept_new_key).await,
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
                client::flush_outbox(&mut p, &mut links).await?;
                sync(&mut p, &dl, &mut links).await?;
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
        Cmd::ResetKeys { yes } => reset_keys(&cli, *yes),
    }
}

fn reset_keys(cli: &Cli, yes: bool) -> Result<()> {
    if !yes {
        return Err(CliError::Usage(
            "resetting drops every session: each contact must accept your new key from a new invitation; run again with --yes".into(),
        ));
    }
    let mut p = open(cli)?;
    let cs = e2e::reset_identity(&p, now(), &mut rand::rng())?;
    commit(&mut p, cs)?;
    println!(
        "new identity key, same address; give each contact a new invitation (`postern invite`): they will see a safety-number change and accept your new key"
    );
    Ok(())
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
        let qr = postern_media::qr::encode(link.as_bytes())?;
        println!("{}", qr.to_terminal());
        println!("{link}");
        println!(
            "one-time invitation, valid for 7 days ({} characters)",
            link.len()
        );
    }
    if let Some(path) = png {
        output::write_qr_png(&postern_media::qr::encode(link.as_bytes())?, path)?;
    }
    if let Some(path) = svg {
        std::fs::write(path, postern_media::qr::svg(link.as_bytes())?).map_err(io_err(path))?;
    }
    Ok(())
}

async fn accept(cli: &Cli, cx: &Ctx, link: &str, accept_new_key: bool) -> Result<()> {
    let mut p = open(cli)?;
    let relay = home_relay(&p)?;
    let name = settings::display_name(&p)?;
    let mut flow = AcceptFlow::from_link(relay.clone(), name, link, now())?;
    postern_native::flow::drive(&mut p, &cx.net, &relay, &mut flow).await?;
    if let Some(peer) = flow.key_changed().copied() {
        let who = courier::route(&p, &peer)?
            .map(|r| r.display_name)
            .unwrap_or_default();
        let who = output::name_or(&who, &peer);
        if !accept_new_key {
            return Err(CliError::Decision(format!(
                "{who}'s identity key changed: nothing was stored. Ask them by a channel you trust whether they reset their keys; if so, accept this invitation again with --accept-new-key (a new invitation is needed: this one is used)"
            )));
        }
        flow.accept_new_key(&mut p, now(), &mut rand::rng())?;
        postern_native::flow::drive(&mut p, &cx.net, &relay, &mut flow).await?;
        println!(
            "accepted {who}'s new identity key; compare safety numbers with `postern verify {who}`"
        );
        return Ok(());
    }
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
    let body = Body::Text(Text(text.to_owned()));
    let sent = async {
        let (env, out) = outbox::queue(&mut p, &peer, body, None, now(), &mut rand::rng())?;
        // Committed: a failure from here on leaves it in the outbox.
        queued_hint(
            client::deliver(&mut p, &mut t, env.id, &out)
                .await
                .map_err(CliError::from),
        )
    }
    .await;
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
            client::deliver(&mut p, &mut t, *id, out).await?;
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
async fn sync(p: &mut Profile, dl: &Path, links: &mut Links<Native>) -> Result<()> {
    let mut ui = Printer { dl, poll_secs: 0 };
    let got = client::collect(p, links, &mut ui).await?;
    if got.received == 0 {
        println!("no new messages");
    }
    Ok(())
}

/// Sends again whatever the onion network has not acknowledged in time.
async fn resend(p: &mut Profile, links: &mut Links<Native>, timeout_ms: u64) -> Result<()> {
    let round = client::resend_round(p, links, timeout_ms).await?;
    show_round(&round);
    Ok(())
}

/// Prints what a resend round did.
fn show_round(round: &client::Round) {
    let r = round.resent;
    if r.resent > 0 {
        println!(
            "resent {} packet(s) not yet acknowledged, over new paths",
            r.resent
        );
    }
    if r.resealed > 0 {
        println!(
            "sealed {} overdue message(s) again on the current session and resent them",
            r.resealed
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
    if round.lost_loops > 0 {
        eprintln!(
            "warning: {} loop cover packet(s) did not come back (failing or hostile relays?)",
            round.lost_loops
        );
    }
    if round.waiting > 0 {
        println!(
            "{} packet(s) wait for a delivery acknowledgement",
            round.waiting
        );
    }
}

/// How the CLI shows a client's work: one line per event, attachments
/// saved under `dl`.
struct Printer<'a> {
    dl: &'a Path,
    /// How often other relays are polled, for the watching line.
    poll_secs: u64,
}

impl client::Ui for Printer<'_> {
    type Error = CliError;

    fn event(&mut self, p: &dyn KvStore, e: inbox::Event) -> Result<()> {
        show(p, e, self.dl)
    }

    fn notice(&mut self, n: Notice<'_, CliError>) {
        match n {
            Notice::Started { watched, polled } if polled > 0 => println!(
                "watching {watched} queue(s), and {polled} on other relays every {} s; Ctrl-C to stop",
                self.poll_secs
            ),
            Notice::Started { watched, .. } => {
                println!("watching {watched} queue(s); Ctrl-C to stop");
            }
            Notice::Reconnected => println!("reconnected to your relay"),
            Notice::Lost(e) => {
                eprintln!("note: lost the connection to your relay ({e}); reconnecting");
            }
            Notice::OutOfReach(e) => eprintln!("note: your relay is still out of reach ({e})"),
            Notice::Failed(Step::Cover, e) => eprintln!("note: cover packet not sent: {e}"),
            Notice::Failed(_, e) => eprintln!("note: {e}"),
            Notice::Resent(round) => show_round(&round),
            // Counted and printed when watching ends.
            _ => {}
        }
    }
}

/// Prints one event from the inbox; a complete attachment is saved.
fn show(p: &dyn KvStore, e: inbox::Event, dl: &Path) -> Result<()> {
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
            let file_name = files::download_name(body.as_ref(), &message_id);
            let path = files::save_attachment(p, &aref, dl, &file_name)?;
            println!(
                "{} → you: saved {} ({} bytes, digest checked)",
                name(&from)?,
                path.display(),
                aref.size
            );
        }
        inbox::Event::Confirmed { packets, .. } => {
            println!("✓ {packets} packet(s) confirmed delivered through the onion network");
        }
        inbox::Event::Dropped { kind } => eprintln!("dropped a bad item ({kind:?})"),
        inbox::Event::KeyChanged { peer } => eprintln!(
            "warning: a message from {} was not opened: their identity key changed; \
             nothing goes to or comes from them until you accept their new key from a new invitation",
            name(&peer)?
        ),
        // Shown once complete (AttachmentReady).
        inbox::Event::Chunk { .. } => {}
        _ => {}
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

/// The watch loop, carried out by the native layer from the engine's
/// `Watcher`; this prints. Everything sent — the outbox, receipts,
/// resends, cover — leaves through `links`.
#[allow(clippy::too_many_arguments)]
async fn watching(
    p: &mut Profile,
    dl: &Path,
    links: &mut Links<Native>,
    ack_timeout_ms: u64,
    cover_per_minute: u32,
    others_poll: std::time::Duration,
    stop: std::pin::Pin<&mut impl core::future::Future<Output = ()>>,
) -> Result<()> {
    client::flush_outbox(p, links).await?;
    let Some(plan) = client::watch_plan(p)? else {
        return Err(CliError::Usage(
            "no queues yet (postern invite / postern accept)".into(),
        ));
    };
    // Cover traffic goes through the onion network only.
    let onion = links.get(p).await?.is_onion();
    let cover = onion && cover_per_minute > 0;
    let cfg = client::watch_config(ack_timeout_ms, cover_per_minute, onion, others_poll);
    let mut ui = Printer {
        dl,
        poll_secs: others_poll.as_secs(),
    };
    let got = client::watch(p, links, plan, cfg, &mut client::StopOn::new(&mut ui, stop)).await?;
    if cover {
        println!(
            "cover traffic: {} packet(s) sent, {} loop(s) came back",
            got.cover_sent, got.loops_back
        );
    }
    Ok(())
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
    let qr = postern_media::qr::encode(&sn.scannable)?;
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
        assert!(postern_native::is_local_failure(&bug));
        let down = CliError::Net(NetError::Timeout);
        assert_eq!(exit_status(down.kind()), exit::NETWORK);
        assert!(!postern_native::is_local_failure(&down));
    }
}
