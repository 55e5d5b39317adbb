//! `tcpdump` capturing the loopback interface for the length of a test.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::CaptureError;
use crate::pcap::Capture;

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `tcpdump` is not installed (`scripts/setup` installs it).
    #[error("tcpdump: {0}")]
    Spawn(std::io::Error),
    /// It did not say it was listening within 10 s (no right to capture:
    /// root or CAP_NET_RAW is needed).
    #[error("tcpdump did not start capturing (root or CAP_NET_RAW needed)")]
    NotListening,
}

/// A running `tcpdump -i lo` writing to a file.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
}

impl Tcpdump {
    /// Starts capturing every packet on `lo` that matches `filter` (a
    /// pcap filter expression, e.g. `tcp port 4443 or udp port 4443`);
    /// returns once tcpdump says it is listening.
    pub fn start(file: &Path, filter: &str) -> Result<Tcpdump, StartError> {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-s", "0", "-B", "16384", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(StartError::Spawn)?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("listening on") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StartError::NotListening);
                }
            }
        }
        std::thread::spawn(move || {
            // Keep draining: the final statistics, and a dropped-packets
            // line if the kernel lost any.
            while let Ok(l) = rx.recv() {
                if l.contains("dropped by kernel") && !l.starts_with("0 ") {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("tcpdump: {l}");
                    }
                }
            }
        });
        Ok(Tcpdump {
            child,
            file: file.to_path_buf(),
        })
    }

    /// Stops the capture and reads it back.
    pub fn stop(&mut self) -> Result<Capture, CaptureError> {
        // Let the last packets reach the file.
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let data =
            std::fs::read(&self.file).map_err(|_| CaptureError::Truncated("the capture file"))?;
        crate::pcap::read(&data)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
