//! `postern-desktop`: the desktop messenger.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use postern_app::ServiceConfig;
use postern_core::crypto::kdf::KdfParams;
use postern_desktop::{Config, Desktop};
use postern_net::Connector;

#[derive(Parser, Debug)]
#[command(
    name = "postern-desktop",
    version,
    about = "Postern: private, asynchronous messaging"
)]
struct Args {
    /// Run this one profile directory (default: the profiles under the
    /// data directory, switched on the lock screen).
    #[arg(long, env = "POSTERN_PROFILE")]
    profile: Option<PathBuf>,
    /// Where the profiles live, each in a `profile-<n>` directory with its
    /// own key (default: `$XDG_DATA_HOME/postern/desktop`).
    #[arg(long, env = "POSTERN_DATA", conflicts_with = "profile")]
    data: Option<PathBuf>,
    /// The home relay offered when a profile is created
    /// (`postern-relay://host:port#pin`).
    #[arg(long, env = "POSTERN_RELAY")]
    relay: Option<String>,
    /// A directory authority of the network (base64url), pinned in a new
    /// profile; repeat for several.
    #[arg(long = "authority", env = "POSTERN_AUTHORITY", value_delimiter = ',')]
    authorities: Vec<String>,
    /// Relays per onion path (3 to 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=5))]
    hops: u8,
    /// Save received attachments here without asking.
    #[arg(long)]
    downloads: Option<PathBuf>,
    /// How long a packet waits for its delivery acknowledgement (ms).
    #[arg(long, env = "POSTERN_ACK_TIMEOUT_MS", default_value_t = postern_engine::route::DEFAULT_ACK_TIMEOUT_MS)]
    ack_timeout_ms: u64,
    /// Connect from this local address.
    #[arg(long, env = "POSTERN_SOURCE_ADDR")]
    source_addr: Option<std::net::IpAddr>,
    /// Record from this microphone (a device name or id, e.g. an ALSA
    /// `hw:CARD=…`); the system's default otherwise.
    #[arg(long, env = "POSTERN_MICROPHONE")]
    microphone: Option<String>,
    /// Play voice messages on this output device; the default otherwise.
    #[arg(long, env = "POSTERN_SPEAKER")]
    speaker: Option<String>,
}

fn default_root() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("postern/desktop")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = match &args.profile {
        Some(_) => None,
        None => Some(args.data.clone().unwrap_or_else(default_root)),
    };
    let cfg = Config {
        profile: args.profile.clone().unwrap_or_default(),
        root,
        relay: args.relay,
        authorities: args.authorities,
        hops: args.hops,
        downloads: args.downloads,
        connector: Connector {
            source_address: args.source_addr,
        },
        service: ServiceConfig {
            ack_timeout_ms: args.ack_timeout_ms,
            ..ServiceConfig::default()
        },
        kdf: KdfParams::DEFAULT,
        microphone: args.microphone,
        speaker: args.speaker,
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Postern")
            .with_app_id("postern")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let r = eframe::run_native(
        "Postern",
        options,
        Box::new(move |cc| Ok(Box::new(Desktop::new(&cc.egui_ctx, cfg)?))),
    );
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("postern-desktop: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
