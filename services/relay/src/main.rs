//! `postern-relay`: `init`, `run` (alias `serve`), `address`, `descriptor`,
//! `network` (directory authority), `testnet` and `web` (the browser app).

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
    /// Signs the relay's descriptor (for the network's authority) and
    /// writes it to DATA_DIR/descriptor. With the relay running, prints
    /// the descriptor the relay keeps current.
    Descriptor(Opts),
    /// Directory authority: create a network, add relays' descriptors,
    /// publish signed directories.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Runs a local test network of N relays until SIGTERM or SIGINT.
    Testnet(TestnetOpts),
    /// Serve Postern's browser app (its files, network.json, the signed directory).
    Web(WebOpts),
}

#[derive(Debug, Args)]
struct WebOpts {
    /// The app's directory (index.html, main.js, the wasm module).
    #[arg(long)]
    app: PathBuf,
    /// The network's signed directory file (re-read on each request).
    #[arg(long)]
    directory: PathBuf,
    /// A directory authority's public key (base64url); repeat for several.
    #[arg(long = "authority", required = true)]
    authorities: Vec<String>,
    /// Authority signatures a directory needs.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Onion hops per path.
    #[arg(long, default_value_t = 3)]
    hops: u8,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// HTTPS certificate chain (PEM); required off loopback.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Also serve browsers that offer no post-quantum TLS key exchange.
    #[arg(long)]
    allow_classical_tls: bool,
}

impl WebOpts {
    fn key_exchange(&self) -> postern_net::tls::KeyExchange {
        if self.allow_classical_tls {
            postern_net::tls::KeyExchange::AlsoClassical
        } else {
            postern_net::tls::KeyExchange::HybridOnly
        }
    }
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Creates NET/authority-key and the network's parameters; prints the
    /// authority's public key.
    Init {
        /// The network directory.
        #[arg(long)]
        dir: PathBuf,
        /// The network's name.
        #[arg(long)]
        name: String,
        /// Sphinx key epoch length, seconds.
        #[arg(long, default_value_t = postern_relay::config::DEFAULT_EPOCH_SECS)]
        epoch_secs: u64,
    },
    /// Verifies a relay's descriptor file and adds it to the network.
    Add {
        /// The network directory.
        #[arg(long)]
        dir: PathBuf,
        /// The descriptor file (DATA_DIR/descriptor of the relay).
        descriptor: PathBuf,
    },
    /// Signs a directory over every added descriptor.
    Publish {
        /// The network directory.
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = postern_relay::network::DEFAULT_VALID_DAYS)]
        valid_days: u64,
        /// Where to write the signed directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Adds this network directory's authority signature to a directory.
    Sign {
        /// The network directory (its authority key signs).
        #[arg(long)]
        dir: PathBuf,
        /// The signed directory to add a signature to.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the result.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct TestnetOpts {
    /// Number of relays.
    #[arg(long, default_value_t = 5)]
    relays: usize,
    /// Directory for the network, the relays' data and their logs (empty or new).
    #[arg(long)]
    dir: PathBuf,
    /// First port (0: free ports).
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Sphinx key epoch length, seconds.
    #[arg(long, default_value_t = postern_relay::config::DEFAULT_EPOCH_SECS)]
    epoch_secs: u64,
    /// Mean per-hop mixing delay of the relays, milliseconds.
    #[arg(long, default_value_t = 0)]
    mix_delay_ms: u64,
    /// Directory validity, days.
    #[arg(long, default_value_t = postern_relay::network::DEFAULT_VALID_DAYS)]
    valid_days: u64,
    /// Also serve Postern's browser app from this directory on 127.0.0.1
    /// (prints `web http://127.0.0.1:PORT/`).
    #[arg(long)]
    web: Option<PathBuf>,
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
    /// Directory authorities' public keys, base64url, comma-separated.
    #[arg(long, env = "POSTERN_RELAY_AUTHORITY_KEYS", value_delimiter = ',')]
    authority_keys: Option<Vec<String>>,
    /// Authority signatures a directory needs [default: 1].
    #[arg(long, env = "POSTERN_RELAY_AUTHORITY_THRESHOLD")]
    authority_threshold: Option<usize>,
    /// Sphinx key epoch length, seconds; the network's value [default: 86400].
    #[arg(long, env = "POSTERN_RELAY_EPOCH_SECS")]
    epoch_secs: Option<u64>,
    /// Start of Sphinx key epoch 0, ms since the Unix epoch [default: 0].
    #[arg(long, env = "POSTERN_RELAY_EPOCH_ZERO_MS")]
    epoch_zero_ms: Option<u64>,
    /// Roles: entry, mix, mailbox, comma-separated [default: all].
    #[arg(long, env = "POSTERN_RELAY_ROLES", value_delimiter = ',')]
    roles: Option<Vec<String>>,
    /// Mean per-hop mixing delay, ms [default: 50].
    #[arg(long, env = "POSTERN_RELAY_MIX_DELAY_MS")]
    mix_delay_ms: Option<u64>,
    /// UDP port of the WebTransport listener for browsers [default: the TCP port].
    #[arg(long, env = "POSTERN_RELAY_WEBTRANSPORT_PORT")]
    webtransport_port: Option<u16>,
    /// Do not listen for browsers over WebTransport.
    #[arg(long, env = "POSTERN_RELAY_NO_WEBTRANSPORT")]
    no_webtransport: bool,
    /// Also accept TLS clients that offer no post-quantum key exchange
    /// (counted in the metrics; off by default).
    #[arg(long, env = "POSTERN_RELAY_ALLOW_CLASSICAL_TLS")]
    allow_classical_tls: bool,
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
            authority_keys: self.authority_keys.clone(),
            authority_threshold: self.authority_threshold,
            epoch_secs: self.epoch_secs,
            epoch_zero_ms: self.epoch_zero_ms,
            roles: self.roles.clone(),
            mix_delay_ms: self.mix_delay_ms,
            webtransport: self.no_webtransport.then_some(false),
            webtransport_port: self.webtransport_port,
            allow_classical_tls: self.allow_classical_tls.then_some(true),
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
    postern_relay::keys::load_or_create_descriptor_key(&s.data_dir).map_err(|e| e.to_string())?;
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

fn descriptor(opts: &Opts) -> Result<(), String> {
    use postern_relay::keys::{self, DESCRIPTOR_FILE};
    let s = opts.settings()?;
    let path = s.data_dir.join(DESCRIPTOR_FILE);
    let lock = std::fs::File::create(s.data_dir.join(server::LOCK_FILE))
        .map_err(|e| format!("{}: {e}", s.data_dir.display()))?;
    if lock.try_lock().is_err() {
        // The running relay owns the keys and keeps the descriptor current.
        out(&path.display().to_string());
        return Ok(());
    }
    let (_, pin) = server::load_tls(&s).map_err(|e| e.to_string())?;
    let address = server::advertised(&s, pin)
        .ok_or("the descriptor needs a fixed port (not 0) and a valid host")?;
    keys::write_descriptor_now(&s, &address).map_err(|e| e.to_string())?;
    out(&path.display().to_string());
    Ok(())
}

fn network(cmd: &NetworkCmd) -> Result<(), String> {
    use postern_relay::network as net;
    let e = |e: net::NetworkError| e.to_string();
    match cmd {
        NetworkCmd::Init {
            dir,
            name,
            epoch_secs,
        } => {
            let params = net::NetworkParams {
                name: name.clone(),
                epoch_secs: *epoch_secs,
                epoch_zero_ms: 0,
            };
            let key = net::init(dir, &params).map_err(e)?;
            out(&net::encode_public(&key));
        }
        NetworkCmd::Add { dir, descriptor } => {
            let bytes = std::fs::read(descriptor)
                .map_err(|err| format!("{}: {err}", descriptor.display()))?;
            let info = net::add(dir, &bytes).map_err(e)?;
            out(&format!("added {}", info.address));
        }
        NetworkCmd::Publish {
            dir,
            valid_days,
            out: path,
        } => {
            net::publish(dir, *valid_days, path, postern_relay::keys::now()).map_err(e)?;
            out(&path.display().to_string());
        }
        NetworkCmd::Sign {
            dir,
            input,
            out: path,
        } => {
            net::sign(&dir.join(net::AUTHORITY_KEY_FILE), input, path).map_err(e)?;
            out(&path.display().to_string());
        }
    }
    Ok(())
}

fn testnet(o: &TestnetOpts) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let opts = postern_relay::testnet::TestnetOptions {
        relays: o.relays,
        dir: o.dir.clone(),
        base_port: o.base_port,
        epoch_secs: o.epoch_secs,
        mix_delay_ms: o.mix_delay_ms,
        valid_days: o.valid_days,
        web: o.web.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        // Handlers first: a signal during setup must still stop the children.
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        postern_relay::testnet::run(opts, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

fn web(o: &WebOpts) -> Result<(), String> {
    use postern_relay::web::{Site, serve};
    let tls = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => {
            let (certs, key) = tls::load(c, k).map_err(|e| e.to_string())?;
            let cfg =
                tls::server_config(certs, key, o.key_exchange()).map_err(|e| e.to_string())?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        }
        _ if o.listen.ip().is_loopback() => None,
        _ => return Err("plain HTTP is for loopback only: give --cert and --key".to_owned()),
    };
    let site = std::sync::Arc::new(Site {
        app_dir: o.app.clone(),
        directory: o.directory.clone(),
        authorities: o.authorities.clone(),
        threshold: o.threshold,
        hops: o.hops,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .map_err(|e| format!("{}: {e}", o.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        out(&format!("web {scheme}://{addr}/"));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(serve(listener, site, tls, stop_rx));
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        let _ = task.await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Init(o) => init(o),
        Cmd::Run(o) => run(o),
        Cmd::Web(o) => web(o),
        Cmd::Address(o) => address(o),
        Cmd::Descriptor(o) => descriptor(o),
        Cmd::Network(n) => network(n),
        Cmd::Testnet(o) => testnet(o),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "postern-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
