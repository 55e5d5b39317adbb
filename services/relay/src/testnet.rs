//! `postern-relay testnet`: a whole network on 127.0.0.1 for development
//! and tests. It creates N relay data directories, a network with one
//! authority, signs a directory over all relays, installs it in every
//! relay, starts N `postern-relay run` children, prints
//!
//! ```text
//! relay 1 postern-relay://127.0.0.1:PORT#PIN
//! ...
//! directory DIR/directory
//! authority BASE64URL
//! ready
//! ```
//!
//! and runs until SIGTERM or SIGINT, when it stops the children (SIGTERM,
//! then waits) and exits. Children's logs go to `DIR/relay-N.log`.
//!
//! Ports are chosen by binding 127.0.0.1:0 and releasing the port before
//! the child binds it again (addresses must be in the descriptors before
//! the relays start); another process could take one in between, which
//! is acceptable for a local test network.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern_core::RelayAddress;

use crate::config::{CONFIG_FILE, Layer, Settings};
use crate::directory::DIRECTORY_FILE;
use crate::keys;
use crate::network::{self, NetworkParams};

/// Most relays one test network may have.
pub const MAX_TESTNET_RELAYS: usize = 64;
/// How long a child may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Test network parameters.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// Number of relays.
    pub relays: usize,
    /// Directory holding everything.
    pub dir: PathBuf,
    /// First port (0: free ports chosen by the system).
    pub base_port: u16,
    /// Sphinx key epoch length.
    pub epoch_secs: u64,
    /// Mean per-hop mixing delay of the relays.
    pub mix_delay_ms: u64,
    /// Directory validity (days).
    pub valid_days: u64,
    /// Serve the browser app from this directory too.
    pub web: Option<PathBuf>,
}

/// Why the test network could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// Bad options.
    #[error("{0}")]
    Usage(&'static str),
    /// File or process failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// Network files.
    #[error("{0}")]
    Network(#[from] network::NetworkError),
    /// Relay keys.
    #[error("{0}")]
    Keys(#[from] keys::KeyError),
    /// Relay configuration.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS identity.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A relay did not start.
    #[error("relay {0} did not start (see its log)")]
    RelayFailed(usize),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TestnetError {
    move |source| TestnetError::Io { what, source }
}

fn announce(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Ports for `n` relays.
fn pick_ports(n: usize, base: u16) -> Result<Vec<u16>, TestnetError> {
    if base != 0 {
        return (0..n)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| base.checked_add(i))
                    .ok_or(TestnetError::Usage("base port too high"))
            })
            .collect();
    }
    // Hold all listeners at once so the ports differ, then release them.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("picking ports"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(io("picking ports"))
}

/// One relay's data directory, config, TLS identity, keys and descriptor.
fn make_relay(
    data_dir: &Path,
    port: u16,
    authority: &str,
    opts: &TestnetOptions,
) -> Result<Vec<u8>, TestnetError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io("relay data directory"))?;
    let config = format!(
        "host = \"127.0.0.1\"\nport = {port}\nadmin_listen = \"127.0.0.1:0\"\n\
         authority_keys = [\"{authority}\"]\nauthority_threshold = 1\n\
         epoch_secs = {}\nepoch_zero_ms = 0\nmix_delay_ms = {}\n",
        opts.epoch_secs, opts.mix_delay_ms
    );
    let cfg_path = data_dir.join(CONFIG_FILE);
    std::fs::write(&cfg_path, config).map_err(io("relay config"))?;
    let layer = Layer {
        data_dir: Some(data_dir.to_owned()),
        ..Layer::default()
    };
    let s = Settings::resolve(layer.over(Layer::from_file(&cfg_path)?))?;
    let pin = crate::tls::generate(&s.data_dir, &s.host)?;
    let address = RelayAddress::new(&s.host, port, Some(pin))
        .map_err(|_| TestnetError::Usage("relay address"))?;
    Ok(keys::write_descriptor_now(&s, &address)?)
}

/// Starts one relay child; returns it once it listens, with its address.
fn start_child(
    exe: &Path,
    data_dir: &Path,
    log: &Path,
    index: usize,
) -> Result<(Child, String, String), TestnetError> {
    let log = std::fs::File::create(log).map_err(io("relay log"))?;
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(io("starting a relay"))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(TestnetError::RelayFailed(index));
    };
    // Read its announcements on a thread (then keep draining the pipe so
    // the child never blocks on it).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(a) = line.strip_prefix("listening ") {
                let _ = tx.send(a.to_owned());
            } else if let Some(a) = line.strip_prefix("admin ") {
                let _ = tx.send(a.to_owned());
            }
        }
    });
    // The relay prints its address, then its admin listener.
    let address = rx.recv_timeout(START_TIMEOUT);
    let admin = rx.recv_timeout(START_TIMEOUT);
    match (address, admin) {
        (Ok(a), Ok(m)) => Ok((child, a, m)),
        _ => {
            stop(&mut [child]);
            Err(TestnetError::RelayFailed(index))
        }
    }
}

/// SIGTERM to every child, then wait (SIGKILL after [`STOP_TIMEOUT`]).
fn stop(children: &mut [Child]) {
    for c in children.iter() {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(c),
            rustix::process::Signal::TERM,
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Builds and runs the test network until `shutdown` resolves (or a
/// relay exits on its own, which is an error).
pub async fn run(
    opts: TestnetOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TestnetError> {
    if opts.relays == 0 || opts.relays > MAX_TESTNET_RELAYS {
        return Err(TestnetError::Usage("--relays must be 1..=64"));
    }
    let net_dir = opts.dir.join("network");
    if net_dir.exists() {
        return Err(TestnetError::Usage(
            "the directory already holds a test network; use an empty one",
        ));
    }
    let exe = std::env::current_exe().map_err(io("locating postern-relay"))?;
    let authority = network::init(
        &net_dir,
        &NetworkParams {
            name: "testnet".into(),
            epoch_secs: opts.epoch_secs,
            epoch_zero_ms: 0,
        },
    )?;
    let authority = network::encode_public(&authority);
    let ports = pick_ports(opts.relays, opts.base_port)?;
    let data_dirs: Vec<PathBuf> = (1..=opts.relays)
        .map(|i| opts.dir.join(format!("relay-{i}")))
        .collect();
    for (d, port) in data_dirs.iter().zip(&ports) {
        let descriptor = make_relay(d, *port, &authority, &opts)?;
        network::add(&net_dir, &descriptor)?;
    }
    let directory_path = opts.dir.join(DIRECTORY_FILE);
    let signed = network::publish(&net_dir, opts.valid_days, &directory_path, keys::now())?;
    for d in &data_dirs {
        keys::write_file_atomic(&d.join(DIRECTORY_FILE), &signed, 0o644)?;
    }

    let mut children: Vec<Child> = Vec::new();
    let mut addresses = Vec::new();
    let mut admins = Vec::new();
    for (i, d) in data_dirs.iter().enumerate() {
        let n = i + 1;
        match start_child(&exe, d, &opts.dir.join(format!("relay-{n}.log")), n) {
            Ok((c, a, m)) => {
                children.push(c);
                addresses.push(a);
                admins.push(m);
            }
            Err(e) => {
                stop(&mut children);
                return Err(e);
            }
        }
    }
    for (i, a) in addresses.iter().enumerate() {
        announce(&format!("relay {} {a}", i + 1));
    }
    // Loopback admin listeners (health and metrics), for operators and tests.
    for (i, m) in admins.iter().enumerate() {
        announce(&format!("admin {} {m}", i + 1));
    }
    let (web_stop, web_task) = match &opts.web {
        Some(app_dir) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(io("web listener"))?;
            let addr = listener.local_addr().map_err(io("web listener"))?;
            let site = std::sync::Arc::new(crate::web::Site {
                app_dir: app_dir.clone(),
                directory: directory_path.clone(),
                authorities: vec![authority.clone()],
                threshold: 1,
                hops: 3,
            });
            let (tx, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(crate::web::serve(listener, site, None, rx));
            announce(&format!("web http://{addr}/"));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    announce(&format!("directory {}", directory_path.display()));
    announce(&format!("authority {authority}"));
    announce("ready");

    tokio::pin!(shutdown);
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    // A relay that dies (killed to test recovery, or crashed) is reported
    // once; the others keep running.
    let mut reported = vec![false; children.len()];
    let result: Result<(), TestnetError> = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = poll.tick() => {
                for (i, c) in children.iter_mut().enumerate() {
                    let gone = !matches!(c.try_wait(), Ok(None));
                    if gone && !reported.get(i).copied().unwrap_or(true) {
                        announce(&format!("relay {} exited", i + 1));
                        if let Some(r) = reported.get_mut(i) {
                            *r = true;
                        }
                    }
                }
            }
        }
    };
    if let Some(tx) = web_stop {
        let _ = tx.send(true);
    }
    if let Some(t) = web_task {
        let _ = t.await;
    }
    tokio::task::block_in_place(|| stop(&mut children));
    result
}
