//! Runs a local relay and `postern` profiles as child processes, on
//! 127.0.0.1 only, and makes the sample media the demo sends.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a relay may take to say where it listens.
pub const RELAY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong driving the processes.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be started or waited for.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The relay did not report its address.
    #[error("relay did not start: {0}")]
    RelayStart(String),
}

type Result<T> = core::result::Result<T, HarnessError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A sibling binary of the running executable (e.g. `postern-relay` next
/// to `postern-demo`, or next to a test's `postern`).
pub fn sibling_binary(of: &Path, name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one up.
    let dir = of.parent().unwrap_or(Path::new("."));
    let candidate = dir.join(name);
    if candidate.exists() {
        return candidate;
    }
    dir.parent().unwrap_or(dir).join(name)
}

/// A relay process.
#[derive(Debug)]
pub struct Relay {
    bin: PathBuf,
    child: Option<Child>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `postern-relay://127.0.0.1:PORT#PIN`.
    pub address: String,
    /// The TCP port it listens on.
    pub port: u16,
    /// Where its logs (stderr) go.
    pub log: PathBuf,
}

impl Relay {
    /// Initialises `data_dir` and starts the relay on an ephemeral port.
    pub fn start(bin: &Path, data_dir: &Path) -> Result<Relay> {
        let out = Command::new(bin)
            .args(["init", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .output()
            .map_err(io("postern-relay init"))?;
        check("postern-relay init", &out)?;
        let mut r = Relay {
            bin: bin.to_path_buf(),
            child: None,
            data_dir: data_dir.to_path_buf(),
            address: String::new(),
            port: 0,
            log: data_dir.with_extension("log"),
        };
        r.spawn(0)?;
        Ok(r)
    }

    fn spawn(&mut self, port: u16) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("relay log"))?;
        let mut child = Command::new(&self.bin)
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--admin-listen",
                "127.0.0.1:0",
                "--port",
            ])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(io("postern-relay run"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::RelayStart("no stdout".into()))?;
        self.child = Some(child);
        self.address = read_address(stdout)?;
        self.port = self
            .address
            .parse::<postern_core::RelayAddress>()
            .map(|a| a.port())
            .map_err(|e| HarnessError::RelayStart(e.to_string()))?;
        Ok(())
    }

    /// `kill -9`, then start again on the same port and data directory.
    pub fn kill9_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().map_err(io("kill relay"))?;
            c.wait().map_err(io("wait relay"))?;
        }
        self.start_again()
    }

    /// Starts a stopped relay again on the same port and data directory.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(HarnessError::RelayStart("the relay is running".into()));
        }
        let port = self.port;
        let before = self.address.clone();
        self.spawn(port)?;
        if self.address != before {
            return Err(HarnessError::RelayStart(
                "address changed across restart".into(),
            ));
        }
        Ok(())
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if c.try_wait().map_err(io("wait relay"))?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child's stdout, line by line, read on a thread (which keeps draining
/// the pipe so the child never blocks on it).
pub fn lines_of(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(core::result::Result::ok)
        {
            // A receiver that went away just means nobody reads any more.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Reads the relay's stdout until it prints `listening <address>`.
fn read_address(stdout: ChildStdout) -> Result<String> {
    let rx = lines_of(stdout);
    let deadline = Instant::now() + RELAY_START_TIMEOUT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| HarnessError::RelayStart("no `listening` line".into()))?;
        if let Some(a) = line.strip_prefix("listening ") {
            return Ok(a.trim().to_owned());
        }
    }
}

fn check(command: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(HarnessError::Failed {
        command: command.to_owned(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A `postern` profile driven through the CLI.
#[derive(Debug, Clone)]
pub struct User {
    /// Display name.
    pub name: String,
    /// Profile directory.
    pub profile: PathBuf,
    bin: PathBuf,
    passphrase: String,
    env: Vec<(String, String)>,
}

impl User {
    /// A user whose profile will live in `profile`.
    pub fn new(bin: &Path, name: &str, profile: &Path) -> User {
        User {
            name: name.to_owned(),
            profile: profile.to_path_buf(),
            bin: bin.to_path_buf(),
            passphrase: format!("correct horse battery staple {name}"),
            env: Vec::new(),
        }
    }

    /// The same user, running every command with `key=value` in its
    /// environment.
    pub fn with_env(mut self, key: &str, value: &str) -> User {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("POSTERN_PROFILE", &self.profile)
            .env("POSTERN_PASSPHRASE", &self.passphrase);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The profile passphrase this user runs with.
    pub fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// Runs `postern ARGS`, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .map_err(io(format!("postern {}", args.join(" "))))
    }

    /// Runs `postern ARGS` and returns its stdout; a failure is an error.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        check(&format!("postern {}", args.join(" ")), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A small PNG photo with a fake GPS EXIF block appended as a PNG `eXIf`
/// chunk is not needed here: the core's tests cover metadata removal.
pub fn sample_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    // Encoding an in-memory image cannot fail; an empty file would be
    // refused later with a clear error anyway.
    let _ = image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

/// A short Opus-in-Ogg voice clip (two seconds of silence frames).
pub fn sample_voice_clip() -> Vec<u8> {
    use ogg::writing::{PacketWriteEndInfo, PacketWriter};
    let mut w = PacketWriter::new(Vec::new());
    let mut head = b"OpusHead".to_vec();
    // Version 1, mono, pre-skip 312, 48 kHz, gain 0, mapping family 0.
    head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    let mut ok = w
        .write_packet(head, 7, PacketWriteEndInfo::EndPage, 0)
        .is_ok();
    ok &= w
        .write_packet(
            b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            7,
            PacketWriteEndInfo::EndPage,
            0,
        )
        .is_ok();
    // 100 packets of 20 ms (960 samples at 48 kHz).
    for i in 1..=100u64 {
        let info = if i == 100 {
            PacketWriteEndInfo::EndStream
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        ok &= w
            .write_packet(vec![0xfc; 40], 7, info, 312 + i * 960)
            .is_ok();
    }
    // Writing to a Vec cannot fail.
    debug_assert!(ok);
    w.into_inner()
}

/// The `postern:` link in `postern invite --quiet` output.
pub fn link_in(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find(|l| l.starts_with("postern:"))
        .map(str::to_owned)
}

/// A local onion network: `postern-relay testnet` and its relays.
#[derive(Debug)]
pub struct Testnet {
    child: Option<Child>,
    /// Its directory.
    pub dir: PathBuf,
    /// Relay addresses, in order (relay 1 first).
    pub relays: Vec<String>,
    /// The directory authority's public key (base64url).
    pub authority: String,
    /// Each relay's loopback admin listener (`http://127.0.0.1:PORT`).
    pub admins: Vec<String>,
}

impl Testnet {
    /// Starts `n` relays on 127.0.0.1 with a signed directory; `mix_delay_ms`
    /// is each relay's mean mixing delay.
    pub fn start(bin: &Path, dir: &Path, n: usize, mix_delay_ms: u64) -> Result<Testnet> {
        let mut child = Command::new(bin)
            .args(["testnet", "--relays", &n.to_string(), "--mix-delay-ms"])
            .arg(mix_delay_ms.to_string())
            .arg("--dir")
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("postern-relay testnet"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::RelayStart("no stdout".into()))?;
        let rx = lines_of(stdout);
        let mut t = Testnet {
            child: Some(child),
            dir: dir.to_path_buf(),
            relays: Vec::new(),
            authority: String::new(),
            admins: Vec::new(),
        };
        let deadline = Instant::now() + RELAY_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| HarnessError::RelayStart("testnet did not get ready".into()))?;
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("relay"), Some(_), Some(addr)) => t.relays.push(addr.to_owned()),
                (Some("admin"), Some(_), Some(url)) => t.admins.push(url.to_owned()),
                (Some("authority"), Some(key), None) => t.authority = key.to_owned(),
                (Some("ready"), None, None) => break,
                _ => {}
            }
        }
        if t.relays.len() != n || t.authority.is_empty() {
            return Err(HarnessError::RelayStart(
                "incomplete testnet announcement".into(),
            ));
        }
        Ok(t)
    }

    /// Relay `i`'s (1-based) Prometheus metrics, from its admin listener.
    pub fn metrics(&self, i: usize) -> Result<String> {
        use std::io::{Read as _, Write as _};
        let url = self
            .admins
            .get(i.wrapping_sub(1))
            .ok_or_else(|| HarnessError::RelayStart("no such relay".into()))?;
        let host = url.strip_prefix("http://").unwrap_or(url);
        let mut c = std::net::TcpStream::connect(host).map_err(io("admin connect"))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .map_err(io("admin request"))?;
        let mut body = String::new();
        c.read_to_string(&mut body).map_err(io("admin response"))?;
        Ok(body)
    }

    /// Kills relay `i` (1-based) with SIGKILL.
    pub fn kill_relay(&self, i: usize) -> Result<()> {
        let pattern = format!(
            "run --data-dir {}$",
            self.dir.join(format!("relay-{i}")).display()
        );
        let out = Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .output()
            .map_err(io("pkill"))?;
        check("pkill", &out)
    }

    /// SIGTERM to the testnet, which stops every relay.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().map_err(io("wait testnet"))?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
