//! The `scrapewell-mock` binary serves the scenarios on the port it is given, and stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// Kills the server when the test ends, whatever happens in it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_serves_on_the_port_it_prints_and_stops_when_killed() {
    let child = Command::new(env!("CARGO_BIN_EXE_scrapewell-mock"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut server = Running(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("the address line");
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    let get = |path: &str| {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let first = get("/flaky/bin?fail=1&retry_after=3");
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert!(
        first.to_ascii_lowercase().contains("retry-after: 3"),
        "{first}"
    );
    assert!(get("/flaky/bin?fail=1").starts_with("HTTP/1.1 200"));

    server.0.kill().unwrap();
    assert!(!server.0.wait().unwrap().success());
    assert!(
        TcpStream::connect(address).is_err(),
        "the port is closed once the server stopped"
    );
}

#[test]
fn bad_arguments_exit_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_scrapewell-mock"))
        .args(["--port", "http"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: scrapewell-mock"));
}
