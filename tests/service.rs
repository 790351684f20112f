//! The `service` example as a user runs it: an HTTP server feeding a
//! pipeline, serving its totals, its Prometheus metrics and its graph with
//! live counts, and stopping cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `service` example binary, built by `cargo test --workspace`.
fn service_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug/examples/service");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p nanostream-examples --example service` \
         (`cargo test --workspace` does)",
        binary.display()
    );
    binary
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the service listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn the_service_feeds_the_pipeline_and_serves_totals_metrics_and_the_live_graph() {
    let mut child = Command::new(service_binary())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the service starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && stderr.read_line(&mut line).expect("stderr") > 0 {
        addr = line.trim().strip_prefix("service: listening on http://").map(str::to_owned);
        line.clear();
    }
    let addr = addr.expect("the service prints its address");
    let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());

    let (status, body) = http(&addr, "POST", "/events", "ada,login\ngrace,login\nada,logout\nbroken\n");
    assert_eq!((status, body.trim()), (202, "accepted 4"));
    // The pipeline runs beside the server: wait for it to count.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, totals) = http(&addr, "GET", "/totals", "");
        if totals == r#"{"login":2,"logout":1}"# {
            break;
        }
        assert!(Instant::now() < deadline, "totals: {totals}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, metrics) = http(&addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"nanostream_node_received_items_total{node="parse"} 4"#), "{metrics}");
    assert!(metrics.contains(r#"nanostream_node_errors_total{node="parse"} 1"#), "{metrics}");
    let (_, dot) = http(&addr, "GET", "/graph", "");
    assert!(dot.contains(r#""parse" [shape=box, label="parse\nin 4, out 3, 1 error"];"#), "{dot}");
    let (_, mermaid) = http(&addr, "GET", "/graph.mmd", "");
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("in 3"), "{mermaid}");
    let (_, snapshot) = http(&addr, "GET", "/snapshot", "");
    assert!(snapshot.contains(r#""name":"totals","received":3"#), "{snapshot}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        assert!(Instant::now() < deadline, "the service did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().expect("log reader");
    assert!(status.success(), "exit {status}; log:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{}", log.join("\n"));
}
