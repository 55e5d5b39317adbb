//! `postern-capture handshakes FILE`: one JSON line per TLS-over-TCP or
//! QUIC connection in a `tcpdump -w` file of the loopback interface, with
//! the key exchange groups its ClientHello offered and its ServerHello
//! selected. Exits 1 with a message when the file cannot be read.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, file] = args.as_slice() else {
        eprintln!("usage: postern-capture handshakes FILE.pcap");
        return ExitCode::from(2);
    };
    if cmd != "handshakes" {
        eprintln!("usage: postern-capture handshakes FILE.pcap");
        return ExitCode::from(2);
    }
    let run = || -> Result<Vec<postern_capture::Handshake>, String> {
        let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let capture = postern_capture::pcap::read(&data).map_err(|e| format!("{file}: {e}"))?;
        postern_capture::handshakes(&capture).map_err(|e| format!("{file}: {e}"))
    };
    match run() {
        Ok(all) => {
            for h in all {
                println!("{}", h.to_json());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern-capture: {e}");
            ExitCode::FAILURE
        }
    }
}
