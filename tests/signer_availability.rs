//! `slashguard signer serve` as a separate process under connection
//! pressure: clients that connect and send nothing, idle keep-alive
//! clients, clients stuck inside a request, and a process out of file
//! descriptors. The baker's request must still be answered.

mod signer_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use signer_support::server::*;

/// Far above any deadline these tests rely on, far below the
/// timeouts they configure (60 s): an answer within it came from
/// reclaiming or isolation, not from a deadline expiring.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// Limits whose deadlines are too long to rescue anything during a test.
const PATIENT: &str = "max-body-bytes = 4096
max-connections = 4
first-request-timeout-ms = 60000
request-timeout-ms = 60000
idle-timeout-ms = 60000";

fn silent_tcp(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

/// Read one HTTP/1.1 reply with a content-length body from a kept-alive
/// connection; returns its status.
fn read_reply(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "reply cut: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// An HTTP connection that made one request and stays open, idle.
fn idle_http(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /authorized_keys HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut s), 200);
    s
}

/// An HTTP connection inside a request: headers sent, body withheld.
fn busy_http(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /keys/{TZ1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 170\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// A socket connection that made one request and stays open, idle.
fn idle_socket(addr: &str) -> Sock {
    let mut c = Sock::tcp(addr);
    assert_eq!(c.call(&[2]), [0, 0]);
    c
}

fn log_has(server: &Server, event: &str) -> usize {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .count()
}

/// Wait (bounded) until the log has `n` lines of `event`.
fn wait_log(server: &Server, event: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_has(server, event) < n {
        assert!(
            Instant::now() < deadline,
            "no {n} {event:?} in {:#?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_sends_nothing_is_dropped_after_the_first_request_deadline() {
    let s = Setup::new();
    let limits = "max-body-bytes = 4096
max-connections = 16
first-request-timeout-ms = 300
request-timeout-ms = 3000
idle-timeout-ms = 30000";
    let server = Server::create(&s.config_with_limits("", limits, ALL_KEYS));
    // A kept-alive connection that made its first request is held to the
    // idle timeout, not to the first-request deadline.
    let mut kept = idle_http(&server.http);
    let mut kept_sock = idle_socket(&server.tcp);

    let bound = Some(Duration::from_secs(60));
    let (a, b) = (
        TcpStream::connect(&server.http).unwrap(),
        TcpStream::connect(&server.tcp).unwrap(),
    );
    let c = UnixStream::connect(&server.unix).unwrap();
    a.set_read_timeout(bound).unwrap();
    b.set_read_timeout(bound).unwrap();
    c.set_read_timeout(bound).unwrap();
    let silent: Vec<Box<dyn Read>> = vec![Box::new(a), Box::new(b), Box::new(c)];
    for (i, mut c) in silent.into_iter().enumerate() {
        let start = Instant::now();
        let mut buf = Vec::new();
        // Returns when the server closes (or the 60 s bound fails it).
        c.read_to_end(&mut buf)
            .unwrap_or_else(|e| panic!("listener {i} kept a silent client: {e}"));
        assert!(buf.is_empty(), "listener {i}: {buf:?}");
        assert!(start.elapsed() < ANSWER_BOUND);
    }
    wait_log(&server, "first_request_timeout", 3);

    std::thread::sleep(Duration::from_millis(600));
    kept.write_all(b"GET /authorized_keys HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut kept), 200);
    assert_eq!(kept_sock.call(&[2]), [0, 0]);
}

#[test]
fn idle_and_silent_clients_cannot_lock_the_baker_out() {
    let s = Setup::new();
    let server = Server::create(&s.config_with_limits("", PATIENT, ALL_KEYS));

    // HTTP: every slot taken by idle keep-alive and silent connections,
    // and more silent ones queued behind them.
    let _idle: Vec<_> = (0..2).map(|_| idle_http(&server.http)).collect();
    let _silent = silent_tcp(&server.http, 12);
    let start = Instant::now();
    let data = attestation(0x13, MAINNET, 10, 0, 1);
    let r = sign_http(&server.http, TZ1, &data);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());

    // The same on the socket listener.
    let _idle_sock: Vec<_> = (0..2).map(|_| idle_socket(&server.tcp)).collect();
    let _silent_sock = silent_tcp(&server.tcp, 12);
    let start = Instant::now();
    let data = attestation(0x13, MAINNET, 11, 0, 1);
    let reply = Sock::tcp(&server.tcp).call(&sign_request(TZ1, &data, None));
    assert!(reply[0] == 0 && reply.len() == 65, "a signature: {reply:?}");
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());

    assert!(log_has(&server, "connections_reclaimed") >= 2);
    assert_eq!(log_has(&server, "first_request_timeout"), 0);
}

#[test]
fn a_listener_under_pressure_does_not_block_the_others() {
    let s = Setup::new();
    let server = Server::create(&s.config_with_limits("", PATIENT, ALL_KEYS));
    // Every HTTP slot taken by clients inside a request (head sent, body
    // withheld), more queued behind them, and a request waiting.
    let busy: Vec<_> = (0..8).map(|_| busy_http(&server.http)).collect();
    let waiting = {
        let addr = server.http.clone();
        std::thread::spawn(move || http(&addr, "GET", "/authorized_keys", None).status)
    };

    // The socket listeners have their own slots.
    let start = Instant::now();
    let data = attestation(0x13, MAINNET, 20, 0, 1);
    let reply = Sock::unix(&server.unix).call(&sign_request(TZ1, &data, None));
    assert!(reply[0] == 0 && reply.len() == 65, "a signature: {reply:?}");
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());

    // The stalled clients are reclaimed: the waiting HTTP request is
    // served while they are still connected.
    assert_eq!(waiting.join().unwrap(), 200);
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());
    assert!(log_has(&server, "connections_reclaimed") >= 1);
    drop(busy);
}

/// CPU time (user + system) of a process, from /proc.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    let tck: u64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_millis((f[0] + f[1]) * 1000 / tck)
}

#[test]
fn out_of_file_descriptors_the_listener_backs_off_and_recovers() {
    let s = Setup::new();
    let limits = "max-body-bytes = 4096
max-connections = 64
first-request-timeout-ms = 60000
request-timeout-ms = 60000
idle-timeout-ms = 60000";
    let server = Server::create(&s.config_with_limits("", limits, ALL_KEYS));
    let pid = server.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for two more connections, then every accept fails (EMFILE).
    let limit = open + 2;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) is needed");
    assert!(status.success());
    let clients = silent_tcp(&server.tcp, 10);
    wait_log(&server, "accept_error", 1);

    // A spinning accept loop would burn the whole window on its thread.
    let window = Duration::from_secs(3);
    let before = cpu_time(pid);
    std::thread::sleep(window);
    let used = cpu_time(pid) - before;
    assert!(
        used < window / 4,
        "{used:?} of CPU in {window:?} while out of descriptors"
    );

    // Descriptors come back when the clients leave: the listener serves
    // again (its pause is at most a second).
    drop(clients);
    let mut c = Sock::tcp(&server.tcp);
    assert_eq!(c.call(&[2]), [0, 0]);
    let line = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("\"accept_error\""))
        .cloned()
        .unwrap();
    assert!(line.contains("\"transport\":\"tcp\""), "{line}");
}

/// Connections that started a request and stall inside it (one byte of
/// the HTTP head, the head without its body, one byte of a socket frame):
/// nobody authenticated them, and a baker's request arrives whole at once.
/// Under pressure they are reclaimed after the grace like silent ones,
/// instead of holding every slot until a deadline (60 s here; an attacker
/// reconnecting and queueing more of them would lock the baker out for
/// good).
#[test]
fn clients_stalling_inside_a_request_cannot_lock_the_baker_out() {
    let s = Setup::new();
    let server = Server::create(&s.config_with_limits("", PATIENT, ALL_KEYS));

    // HTTP: every slot and more queued behind, half one byte of the head,
    // half the whole head of a POST with its body withheld.
    let mut stuck = Vec::new();
    for i in 0..12 {
        if i % 2 == 0 {
            let mut c = TcpStream::connect(&server.http).unwrap();
            c.write_all(b"P").unwrap();
            stuck.push(c);
        } else {
            stuck.push(busy_http(&server.http));
        }
    }
    let start = Instant::now();
    let data = attestation(0x13, MAINNET, 10, 0, 1);
    let r = sign_http(&server.http, TZ1, &data);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());

    // The socket listener: one byte of the length prefix, or the prefix
    // and part of the frame.
    for i in 0..12 {
        let mut c = TcpStream::connect(&server.tcp).unwrap();
        c.write_all(if i % 2 == 0 { &[0][..] } else { &[0, 40, 0, 0] })
            .unwrap();
        stuck.push(c);
    }
    let start = Instant::now();
    let data = attestation(0x13, MAINNET, 11, 0, 1);
    let reply = Sock::tcp(&server.tcp).call(&sign_request(TZ1, &data, None));
    assert!(reply[0] == 0 && reply.len() == 65, "a signature: {reply:?}");
    assert!(start.elapsed() < ANSWER_BOUND, "{:?}", start.elapsed());
    assert!(log_has(&server, "connections_reclaimed") >= 2);
}
