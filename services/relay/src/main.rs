//! `postern-relay`: `init`, `run` (alias `serve`) and `address`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use postern_relay::config::{CONFIG_FILE, Layer, Settings};
use postern_relay::{server, tls};

#[derive(Debug, Parser)]
#[command(name = "postern-relay", version, about = "Postern relay node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Creates the data directory and the relay's TLS identity, and prints
    /// the relay's address.
    Init(Opts),
    /// Runs the relay until SIGTERM or SIGINT.
    #[command(alias = "serve")]
    Run(Opts),
    /// Prints the relay's address.
    Address(Opts),
}

/// Every setting; each overrides the config file, which overrides the
/// embedded defaults.
#[derive(Debug, Args)]
struct Opts {
    /// TOML config file (default: DATA_DIR/relay.toml if present).
    #[arg(long, env = "POSTERN_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: /var/lib/postern-relay].
    #[arg(long, env = "POSTERN_RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Host name or IP address clients connect to [default: 127.0.0.1].
    #[arg(long, env = "POSTERN_RELAY_HOST")]
    host: Option<String>,
    /// TCP port; 0 picks a free one at run time [default: 7443].
    #[arg(long, env = "POSTERN_RELAY_PORT")]
    port: Option<u16>,
    /// Socket address to listen on [default: HOST:PORT, or 0.0.0.0:PORT for a DNS host].
    #[arg(long, env = "POSTERN_RELAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin listener for /health and /metrics [default: 127.0.0.1:9464].
    #[arg(long, env = "POSTERN_RELAY_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// CA-issued certificate chain (PEM); the address then carries no pin.
    #[arg(long, env = "POSTERN_RELAY_CERT_PATH")]
    cert_path: Option<PathBuf>,
    /// Private key of that certificate (PEM).
    #[arg(long, env = "POSTERN_RELAY_KEY_PATH")]
    key_path: Option<PathBuf>,
    /// Most simultaneous connections [default: 4096].
    #[arg(long, env = "POSTERN_RELAY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most queues [default: 1000000].
    #[arg(long, env = "POSTERN_RELAY_MAX_QUEUES")]
    max_queues: Option<u64>,
    /// Most items per queue [default: 70000].
    #[arg(long, env = "POSTERN_RELAY_QUEUE_MAX_MESSAGES")]
    queue_max_messages: Option<u64>,
    /// Most blob bytes per queue [default: 143360000].
    #[arg(long, env = "POSTERN_RELAY_QUEUE_MAX_BYTES")]
    queue_max_bytes: Option<u64>,
    /// Retention of items and idle queues, seconds [default: 1814400 = 21 days].
    #[arg(long, env = "POSTERN_RELAY_TTL_SECS")]
    ttl_secs: Option<u64>,
    /// Garbage collection interval, seconds [default: 600].
    #[arg(long, env = "POSTERN_RELAY_GC_INTERVAL_SECS")]
    gc_interval_secs: Option<u64>,
    /// Sustained requests per second per connection [default: 1000].
    #[arg(long, env = "POSTERN_RELAY_RATE_PER_SEC")]
    rate_per_sec: Option<u32>,
    /// Request burst per connection [default: 2000].
    #[arg(long, env = "POSTERN_RELAY_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Seconds a connection may stay silent [default: 600].
    #[arg(long, env = "POSTERN_RELAY_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Log queue ids (debugging only).
    #[arg(long, env = "POSTERN_RELAY_LOG_QUEUE_IDS")]
    log_queue_ids: bool,
}

impl Opts {
    fn layer(&self) -> Layer {
        Layer {
            data_dir: self.data_dir.clone(),
            host: self.host.clone(),
            port: self.port,
            listen: self.listen,
            admin_listen: self.admin_listen,
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            max_connections: self.max_connections,
            max_queues: self.max_queues,
            queue_max_messages: self.queue_max_messages,
            queue_max_bytes: self.queue_max_bytes,
            ttl_secs: self.ttl_secs,
            gc_interval_secs: self.gc_interval_secs,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            idle_timeout_secs: self.idle_timeout_secs,
            log_queue_ids: self.log_queue_ids.then_some(true),
        }
    }

    fn settings(&self) -> Result<Settings, String> {
        let flags = self.layer();
        let file = match &self.config {
            Some(path) => Layer::from_file(path).map_err(|e| e.to_string())?,
            None => {
                let dir = flags
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(postern_relay::config::DEFAULT_DATA_DIR));
                let path = dir.join(CONFIG_FILE);
                if path.exists() {
                    Layer::from_file(&path).map_err(|e| e.to_string())?
                } else {
                    Layer::default()
                }
            }
        };
        Settings::resolve(flags.over(file)).map_err(|e| e.to_string())
    }
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn init(opts: &Opts) -> Result<(), String> {
    let s = opts.settings()?;
    create_dir(&s.data_dir)?;
    let pin = match &s.ca_cert {
        Some(_) => None,
        None => Some(tls::generate(&s.data_dir, &s.host).map_err(|e| e.to_string())?),
    };
    // Remember where this relay lives, unless a config file is in charge.
    let cfg = s.data_dir.join(CONFIG_FILE);
    if opts.config.is_none() && !cfg.exists() {
        let host = toml_string(&s.host);
        std::fs::write(&cfg, format!("host = {host}\nport = {}\n", s.port))
            .map_err(|e| format!("{}: {e}", cfg.display()))?;
    }
    match server::advertised(&s, pin) {
        Some(a) => out(&a.to_string()),
        None => out("port 0: the address is printed (and written to DATA_DIR/address) at run time"),
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {}
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn address(opts: &Opts) -> Result<(), String> {
    let s = opts.settings()?;
    let (_, pin) = server::load_tls(&s).map_err(|e| e.to_string())?;
    match server::advertised(&s, pin) {
        Some(a) => out(&a.to_string()),
        None => {
            let p = s.data_dir.join(server::ADDRESS_FILE);
            let a = std::fs::read_to_string(&p)
                .map_err(|_| "port 0: start the relay, then read DATA_DIR/address".to_owned())?;
            out(a.trim());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, run until killed.
            std::future::pending::<()>().await;
        }
    }
}

fn run(opts: &Opts) -> Result<(), String> {
    let s = opts.settings()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTERN_RELAY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(server::run(s, shutdown_signal()))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Init(o) => init(o),
        Cmd::Run(o) => run(o),
        Cmd::Address(o) => address(o),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "postern-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
