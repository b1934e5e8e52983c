//! Unmodified programs in vnets through `vnetctl exec` and the preload
//! library: python's http.server and curl, nc both ways, UDP with python,
//! iperf3, the errors a C program sees, fork, a client killed mid-transfer,
//! and a C daemon with sockets in three vnets.

mod common;
mod daemon;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pattern;
use daemon::host::Bg;
use daemon::{TWO_HOSTS, Vnetd};
use sha2::{Digest, Sha256};
use vnet::sockets::client::{Net, TcpStream};

/// Waits until something accepts TCP connections at `addr` in `vnet`.
fn wait_listening(d: &Vnetd, vnet: &str, addr: &str) {
    let net = Net::open_at(&d.sockets(), vnet).unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(&net, addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "nothing listens at {addr} in {vnet}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vnet-exec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

fn run_ok(mut c: Command) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_fetches_from_python_http_server_by_address_and_by_name() {
    let topo =
        format!("{TWO_HOSTS}\n[vnet.red.dns]\nhosts = {{ web = [\"10.0.0.2\", \"fd00::2\"] }}\n");
    let d = Vnetd::start("exec-http", &topo);
    let dir = scratch("http");
    let file = dir.join("big.bin");
    std::fs::write(&file, pattern(16 << 20, 7)).unwrap();
    let _server = Bg::spawn({
        let mut c = d.exec(
            "blue",
            &["python3", "-m", "http.server", "8000", "--bind", "::"],
        );
        c.current_dir(&dir).stderr(Stdio::null());
        c
    });
    wait_listening(&d, "blue", "10.0.0.2:8000");
    for (i, url) in [
        "http://10.0.0.2:8000/big.bin",
        "http://[fd00::2]:8000/big.bin",
        "http://web:8000/big.bin",
    ]
    .iter()
    .enumerate()
    {
        let out = dir.join(format!("got{i}.bin"));
        run_ok(d.exec(
            "red",
            &["curl", "-sS", "--fail", "-o", out.to_str().unwrap(), url],
        ));
        assert_eq!(sha(&out), sha(&file), "{url}: content differs");
    }
    // The name is red's: blue does not know it, and the host is never asked.
    let st = d
        .exec(
            "blue",
            &["curl", "-sS", "-o", "/dev/null", "http://web:8000/"],
        )
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(6), "curl in blue resolved red's name");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nc_both_directions() {
    let d = Vnetd::start("exec-nc", TWO_HOSTS);
    let dir = scratch("nc");
    for (server, client, dst) in [("blue", "red", "10.0.0.2"), ("red", "blue", "10.0.0.1")] {
        let data = pattern(1 << 20, dst.len() as u64);
        let got = dir.join(format!("{server}.out"));
        let listener = Bg::spawn({
            let mut c = d.exec(server, &["nc", "-l", "9000"]);
            c.stdout(std::fs::File::create(&got).unwrap());
            c
        });
        // nc serves one connection (a probe would use it up): wait for its
        // listener to appear in the stack.
        wait_served(&d, server, 1);
        let mut sender = d
            .exec(client, &["nc", "-N", dst, "9000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        sender.stdin.take().unwrap().write_all(&data).unwrap();
        assert!(sender.wait().unwrap().success(), "nc client failed");
        assert!(listener.wait(Duration::from_secs(20)).success());
        assert!(
            std::fs::read(&got).unwrap() == data,
            "{client} -> {server}: bytes differ"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `vnet`'s stack has at least `n` sockets (a program's
/// listener exists there once it listens, a UDP socket once bound).
fn wait_served(d: &Vnetd, vnet: &str, n: u64) {
    let t0 = Instant::now();
    while served(d, vnet).0 < n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no socket in {vnet}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (stack sockets, sockets served to programs) of `vnet`.
fn served(d: &Vnetd, vnet: &str) -> (u64, u64) {
    let out = d.ctl_ok(&["-j", "-n", vnet, "stats"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        j["sockets"].as_u64().unwrap(),
        j["sockets_served"].as_u64().unwrap(),
    )
}

const UDP_ECHO: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5353))
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(65535)
    s.sendto(data[::-1], peer)
"#;

const UDP_CLIENT: &str = r#"
import socket, sys
dst = sys.argv[1]
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
c = socket.socket(fam, socket.SOCK_DGRAM)
c.settimeout(5)
for i, n in enumerate([1, 100, 1400, 3000, 8000, 0]):
    msg = bytes((i * 7 + j) % 256 for j in range(n))
    c.sendto(msg, (dst, 5353))
    data, peer = c.recvfrom(65535)
    assert data == msg[::-1], (n, len(data))
    assert peer[0] == dst and peer[1] == 5353, peer
# connected UDP: send/recv without addresses
c.connect((dst, 5353))
c.send(b'connected')
assert c.recv(100) == b'detcennoc'
print('ok', c.getsockname()[1] != 0)
"#;

#[test]
fn udp_exchange_with_python() {
    let d = Vnetd::start("exec-udp", TWO_HOSTS);
    for (bind, dst) in [("0.0.0.0", "10.0.0.2"), ("::", "fd00::2")] {
        let server = Bg::spawn({
            let mut c = d.exec("blue", &["python3", "-c", UDP_ECHO, bind, "7"]);
            c.stdout(Stdio::null());
            c
        });
        wait_served(&d, "blue", 1);
        let out = run_ok(d.exec("red", &["python3", "-c", UDP_CLIENT, dst]));
        assert_eq!(out.trim(), "ok True");
        assert!(server.wait(Duration::from_secs(20)).success());
    }
}

#[test]
fn iperf3_between_vnets() {
    let d = Vnetd::start("exec-iperf", TWO_HOSTS);
    let server = Bg::spawn({
        let mut c = d.exec("blue", &["iperf3", "-s", "-1", "-p", "5201"]);
        c.stdout(Stdio::null());
        c
    });
    wait_served(&d, "blue", 1);
    let out = run_ok(d.exec(
        "red",
        &["iperf3", "-c", "10.0.0.2", "-p", "5201", "-t", "2", "-J"],
    ));
    let j: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let rx = &j["end"]["sum_received"];
    assert!(rx["bytes"].as_f64().unwrap() > 1e6, "{rx}");
    assert!(rx["bits_per_second"].as_f64().unwrap() > 1e7, "{rx}");
    assert!(server.wait(Duration::from_secs(20)).success());
}

const ERRORS: &str = r#"
import socket, errno, select
# Non-blocking connect to a closed port: EINPROGRESS, then ECONNREFUSED
# through SO_ERROR once the socket is writable.
s = socket.socket()
s.setblocking(False)
rc = s.connect_ex(('10.0.0.2', 9))
assert rc == errno.EINPROGRESS, rc
_, w, _ = select.select([], [s], [], 5)
assert w == [s]
e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
assert e == errno.ECONNREFUSED, errno.errorcode.get(e, e)
# Blocking connect to a closed port.
try:
    socket.create_connection(('10.0.0.2', 9), timeout=5)
    raise SystemExit('connected to a closed port')
except ConnectionRefusedError:
    pass
# No route.
u = socket.socket()
rc = u.connect_ex(('192.0.2.1', 80))
assert rc == errno.ENETUNREACH, errno.errorcode.get(rc, rc)
# Not our address.
b = socket.socket()
try:
    b.bind(('10.0.0.2', 80)); raise SystemExit('bound a foreign address')
except OSError as x:
    assert x.errno == errno.EADDRNOTAVAIL, x
# One listener per port in a vnet.
a1 = socket.socket(); a1.bind(('0.0.0.0', 7777)); a1.listen()
a2 = socket.socket()
try:
    a2.bind(('0.0.0.0', 7777)); raise SystemExit('bound a taken port')
except OSError as x:
    assert x.errno == errno.EADDRINUSE, x
# What the socket says of itself.
assert a1.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
assert a1.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
assert a1.getsockname() == ('0.0.0.0', 7777), a1.getsockname()
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
try:
    c.getpeername(); raise SystemExit('peer of an unconnected socket')
except OSError as x:
    assert x.errno == errno.ENOTCONN, x
print('ok')
"#;

#[test]
fn errors_a_program_sees() {
    let d = Vnetd::start("exec-errors", TWO_HOSTS);
    let out = run_ok(d.exec("red", &["python3", "-c", ERRORS]));
    assert_eq!(out.trim(), "ok");
}

const BANNER: &str = r#"
import socket, sys
s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen()
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"#;

#[test]
fn two_vnets_bind_the_same_port() {
    let d = Vnetd::start("exec-same-port", TWO_HOSTS);
    let red = Bg::spawn({
        let mut c = d.exec("red", &["python3", "-c", BANNER, "red", "1"]);
        c.stdout(Stdio::null());
        c
    });
    let blue = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-c", BANNER, "blue", "1"]);
        c.stdout(Stdio::null());
        c
    });
    wait_served(&d, "red", 1);
    wait_served(&d, "blue", 1);
    // `vnetctl ss` shows each vnet's listener.
    for v in ["red", "blue"] {
        let out = d.ctl_ok(&["-j", "-n", v, "ss"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            j.as_array().unwrap().iter().any(|s| s["proto"] == "tcp"
                && s["state"] == "LISTEN"
                && s["local"] == "0.0.0.0:8080"),
            "{v}: {j}"
        );
    }
    // Each answers in its own vnet.
    let got = run_ok(d.exec("red", &["nc", "-N", "10.0.0.2", "8080"]));
    assert_eq!(got, "blue");
    let got = run_ok(d.exec("blue", &["nc", "-N", "10.0.0.1", "8080"]));
    assert_eq!(got, "red");
    assert!(red.wait(Duration::from_secs(20)).success());
    assert!(blue.wait(Duration::from_secs(20)).success());
}

const FORK: &str = r#"
import os, socket
s = socket.create_connection(('10.0.0.2', 8080), timeout=5)
pid = os.fork()
if pid == 0:
    # The child uses the inherited socket, and makes one of its own.
    s.sendall(b'from the child')
    s.close()
    t = socket.create_connection(('10.0.0.2', 8081), timeout=5)
    t.sendall(b'child socket'); t.close()
    os._exit(0)
s.close()
_, st = os.waitpid(pid, 0)
assert st == 0, st
print('ok')
"#;

const SINK: &str = r#"
import socket, sys
out = []
ls = []
for p in (8080, 8081):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(('0.0.0.0', p)); l.listen(); ls.append(l)
print('ready', flush=True)
for l in ls:
    c, _ = l.accept()
    data = b''
    while True:
        d = c.recv(100)
        if not d: break
        data += d
    out.append(data.decode())
print('|'.join(out), flush=True)
"#;

#[test]
fn a_forked_child_uses_the_inherited_socket() {
    let d = Vnetd::start("exec-fork", TWO_HOSTS);
    let mut sink = d
        .exec("blue", &["python3", "-c", SINK])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_served(&d, "blue", 2);
    let out = run_ok(d.exec("red", &["python3", "-c", FORK]));
    assert_eq!(out.trim(), "ok");
    let mut got = String::new();
    sink.stdout
        .take()
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert!(sink.wait().unwrap().success());
    assert_eq!(got.lines().last(), Some("from the child|child socket"));
}

const SOURCE: &str = r#"
import socket
l = socket.socket(); l.bind(('0.0.0.0', 8090)); l.listen()
print('ready', flush=True)
c, _ = l.accept()
try:
    while True:
        c.sendall(b'x' * 65536)
except OSError:
    pass
"#;

const SLOW_READER: &str = r#"
import socket, sys, time
s = socket.create_connection(('10.0.0.2', 8090), timeout=5)
s.recv(1000)
print('reading', flush=True)
time.sleep(60)
"#;

#[test]
fn a_client_killed_mid_transfer_leaves_no_socket_behind() {
    let d = Vnetd::start("exec-kill", TWO_HOSTS);
    let source = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-c", SOURCE]);
        c.stdout(Stdio::null());
        c
    });
    wait_served(&d, "blue", 1);
    let mut reader = d
        .exec("red", &["python3", "-c", SLOW_READER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 8];
    reader
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"reading\n");
    assert!(served(&d, "red").1 >= 1);
    // SIGKILL: no chance to close anything.
    reader.kill().unwrap();
    reader.wait().unwrap();
    // red's side is reset and freed; blue's writer sees the reset and ends.
    assert!(source.wait(Duration::from_secs(20)).success());
    let t0 = Instant::now();
    loop {
        let (r, b) = (served(&d, "red"), served(&d, "blue"));
        if r == (0, 0) && b == (0, 0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sockets left: red {r:?}, blue {b:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three leaf vnets around a hub, each leaf on its own /24.
const STAR: &str = r#"
[vnet.hub.link.r]
type = "epair"
peer = { vnet = "red", name = "eth0" }
up = true
addr = ["10.1.0.2/24"]
[vnet.hub.link.b]
type = "epair"
peer = { vnet = "blue", name = "eth0" }
up = true
addr = ["10.2.0.2/24"]
[vnet.hub.link.g]
type = "epair"
peer = { vnet = "green", name = "eth0" }
up = true
addr = ["10.3.0.2/24"]
[vnet.red.link.eth0]
up = true
addr = ["10.1.0.1/24"]
[vnet.blue.link.eth0]
up = true
addr = ["10.2.0.1/24"]
[vnet.green.link.eth0]
up = true
addr = ["10.3.0.1/24"]
"#;

#[test]
fn a_c_daemon_answers_in_each_of_three_vnets_and_nowhere_else() {
    let d = Vnetd::start("exec-multi", STAR);
    let lib = daemon::preload();
    let libdir = lib.parent().unwrap();
    let dir = scratch("multi");
    let exe = dir.join("multi_vnet_daemon");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-O2", "-I"])
        .arg(root.join("include"))
        .arg(root.join("examples/multi_vnet_daemon.c"))
        .arg("-L")
        .arg(libdir)
        .arg("-lvnet_preload")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "compiling the example daemon failed");
    // A port no host program is likely to hold.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut daemon = Command::new(&exe)
        .arg(port.to_string())
        .args(["red", "blue", "green"])
        .env("VNET_SOCKETS", d.sockets())
        .env_remove("VNET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    daemon
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    let _daemon = Bg(daemon);
    for (vnet, addr) in [
        ("red", "10.1.0.1"),
        ("blue", "10.2.0.1"),
        ("green", "10.3.0.1"),
    ] {
        let got = run_ok(d.exec("hub", &["nc", "-N", addr, &port.to_string()]));
        assert_eq!(got, format!("hello from {vnet}\n"));
    }
    // Not in the hub, and not on the host.
    let hub = Net::open_at(&d.sockets(), "hub").unwrap();
    let e = TcpStream::connect(&hub, SocketAddr::from(([10, 1, 0, 2], port)))
        .err()
        .expect("the hub has no such listener");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ping_uses_ping_sockets_in_the_vnet() {
    let d = Vnetd::start("exec-ping", TWO_HOSTS);
    let out = run_ok(d.exec(
        "red",
        &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"],
    ));
    assert!(out.contains("3 received"), "{out}");
    let out = run_ok(d.exec(
        "red",
        &[
            "ping", "-n", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00::2",
        ],
    ));
    assert!(out.contains("2 received"), "{out}");
    // An address no one has: no reply, exit status 1.
    let st = d
        .exec("red", &["ping", "-n", "-c", "1", "-W", "1", "10.0.0.99"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
}

/// A name server for one zone (`db.lab`), answering A and AAAA, NXDOMAIN
/// for the rest; logs each question and who asked.
const DNS_SERVER: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 53))
zone = {'db.lab.': ('10.0.0.2', 'fd00::2')}
while True:
    q, peer = s.recvfrom(512)
    qid = struct.unpack('>H', q[:2])[0]
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype = struct.unpack('>H', q[i + 1:i + 3])[0]
    name = '.'.join(labels).lower() + '.'
    print(name, qtype, peer[0], flush=True)
    rec, ans = zone.get(name), b''
    if rec and qtype == 1:
        ans = b'\xc0\x0c' + struct.pack('>HHIH', 1, 1, 60, 4) + socket.inet_aton(rec[0])
    if rec and qtype == 28:
        ans = b'\xc0\x0c' + struct.pack('>HHIH', 28, 1, 60, 16) + socket.inet_pton(socket.AF_INET6, rec[1])
    hdr = struct.pack('>HHHHHH', qid, 0x8180 | (0 if rec else 3), 1, 1 if ans else 0, 0, 0)
    s.sendto(hdr + q[12:i + 5] + ans, peer)
"#;

const LOOKUPS: &str = r#"
import socket
a = socket.getaddrinfo('db', 80, socket.AF_INET, socket.SOCK_STREAM)
assert [x[4][0] for x in a] == ['10.0.0.2'], a
a = socket.getaddrinfo('db.lab.', 80, socket.AF_INET6, socket.SOCK_STREAM)
assert [x[4][0] for x in a] == ['fd00::2'], a
try:
    socket.getaddrinfo('nowhere', 80)
    raise SystemExit('resolved an unknown name')
except socket.gaierror as e:
    assert e.errno == socket.EAI_NONAME, e
# Reverse lookups stay in the vnet: numbers, never the host's resolver.
assert socket.getnameinfo(('10.0.0.2', 80), 0) == ('10.0.0.2', 'http')
try:
    socket.getnameinfo(('10.0.0.2', 80), socket.NI_NAMEREQD)
    raise SystemExit('a name for an address')
except socket.gaierror:
    pass
print('ok')
"#;

#[test]
fn names_are_asked_of_the_vnets_name_server_through_the_vnet() {
    let topo =
        format!("{TWO_HOSTS}\n[vnet.red.dns]\nnameserver = [\"10.0.0.2\"]\nsearch = [\"lab\"]\n");
    let d = Vnetd::start("exec-dns", &topo);
    let dir = scratch("dns");
    let log = dir.join("queries.log");
    let _server = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-c", DNS_SERVER]);
        c.stdout(std::fs::File::create(&log).unwrap());
        c
    });
    wait_served(&d, "blue", 1);
    let out = run_ok(d.exec("red", &["python3", "-c", LOOKUPS]));
    assert_eq!(out.trim(), "ok");
    // The questions came from red's address: through the vnet, not the host.
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(asked.contains("db.lab. 1 10.0.0.1"), "{asked}");
    assert!(asked.contains("db.lab. 28 10.0.0.1"), "{asked}");
    assert!(asked.contains("nowhere.lab. 1 10.0.0.1"), "{asked}");
    // curl by name, end to end.
    let _web = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-m", "http.server", "8000"]);
        c.current_dir(&dir)
            .stderr(Stdio::null())
            .stdout(Stdio::null());
        c
    });
    wait_listening(&d, "blue", "10.0.0.2:8000");
    run_ok(d.exec(
        "red",
        &[
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "http://db:8000/queries.log",
        ],
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

const ECHO_SERVERS: &str = r#"
import socket, socketserver, threading
class T(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d: break
            self.request.sendall(d)
class U(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)
socketserver.ThreadingTCPServer.allow_reuse_address = True
t = socketserver.ThreadingTCPServer(('0.0.0.0', 8080), T)
u = socketserver.UDPServer(('0.0.0.0', 8081), U)
threading.Thread(target=u.serve_forever, daemon=True).start()
print('ready', flush=True)
t.serve_forever()
"#;

const HARDY_CLIENT: &str = r#"
import os, socket, subprocess, sys, threading
# Threads: each its own connection at once.
out = {}
def worker(i):
    s = socket.create_connection(('10.0.0.2', 8080), timeout=10)
    s.sendall(b'thread %d' % i)
    out[i] = s.recv(100)
    s.close()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
assert all(out[i] == b'thread %d' % i for i in range(8)), out
# exec: a new program inherits a TCP and a UDP socket and uses them.
t = socket.create_connection(('10.0.0.2', 8080), timeout=10)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(('10.0.0.2', 8081))
child = '''
import socket, sys
t = socket.socket(fileno=int(sys.argv[1]))
u = socket.socket(fileno=int(sys.argv[2]))
t.settimeout(10); u.settimeout(10)
assert t.getpeername() == ('10.0.0.2', 8080), t.getpeername()
t.sendall(b'from the exec'); assert t.recv(100) == b'from the exec'
u.send(b'udp after exec'); assert u.recv(100) == b'udp after exec'
print('child ok')
'''
r = subprocess.run([sys.executable, '-c', child, str(t.fileno()), str(u.fileno())],
                   pass_fds=(t.fileno(), u.fileno()), capture_output=True, text=True)
assert r.returncode == 0 and r.stdout.strip() == 'child ok', (r.stdout, r.stderr)
# Close every descriptor but stdio, as some daemons do at start-up (the
# preload library's session goes too), then carry on.
os.closerange(3, 4096)
s = socket.create_connection(('10.0.0.2', 8080), timeout=10)
s.sendall(b'after closerange'); assert s.recv(100) == b'after closerange'
print('ok')
"#;

#[test]
fn threads_exec_and_closing_every_descriptor() {
    let d = Vnetd::start("exec-hardy", TWO_HOSTS);
    let _servers = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-c", ECHO_SERVERS]);
        c.stdout(Stdio::null());
        c
    });
    wait_served(&d, "blue", 2);
    let out = run_ok(d.exec("red", &["python3", "-c", HARDY_CLIENT]));
    assert_eq!(out.trim(), "ok");
}

/// Whether this test may act as another user (root, with setpriv).
fn can_switch_users() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root
        && Path::new("/usr/bin/python3").exists()
        && Command::new("setpriv").arg("--version").output().is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("VNET_REQUIRE_PRIV").is_none(),
        "VNET_REQUIRE_PRIV is set but this test cannot act as another user (needs root, setpriv, /usr/bin/python3)"
    );
    eprintln!("skipped: needs root, setpriv and /usr/bin/python3");
    false
}

/// `vnetctl ARGS` as uid 65534.
fn as_nobody(d: &Vnetd, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(&d.sock)
        .args(args)
        .env("VNET_PRELOAD", daemon::preload())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn another_user_may_use_only_their_own_vnets() {
    if !can_switch_users() {
        return;
    }
    let d = Vnetd::start("exec-users", TWO_HOSTS);
    // root's vnet: the socket is refused, not handed out on the host.
    let o = as_nobody(
        &d,
        &[
            "exec",
            "red",
            "--",
            "/usr/bin/python3",
            "-c",
            "import socket; socket.socket()",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("uid 65534 may see only its own vnets"),
        "{err}"
    );
    // Their own vnet: sockets work (over its loopback).
    let o = as_nobody(&d, &["vnet", "add", "mine"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_nobody(
        &d,
        &[
            "exec",
            "mine",
            "--",
            "/usr/bin/python3",
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 5000)); s.sendto(b'mine', ('127.0.0.1', 5000)); print(s.recvfrom(10)[0].decode())",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "mine");
}

const TIMEOUT_AND_EPIPE: &str = r#"
import errno, socket, time
# No one answers at 10.0.0.99 (not even ARP): the connect times out after
# net.inet.tcp.keepinit (set to 1 s for this vnet).
s = socket.socket()
t0 = time.monotonic()
rc = s.connect_ex(('10.0.0.99', 80))
assert rc == errno.ETIMEDOUT, errno.errorcode.get(rc, rc)
assert 0.5 < time.monotonic() - t0 < 10, time.monotonic() - t0
# Writing to a connection the peer closed: the peer's reset turns the next
# writes into EPIPE (Python ignores SIGPIPE).
c = socket.create_connection(('10.0.0.2', 8080), timeout=5)
assert c.recv(10) == b''
try:
    for _ in range(250):
        c.send(b'x' * 1000)
        time.sleep(0.02)
    raise SystemExit('writes after a reset kept succeeding')
except BrokenPipeError:
    pass
print('ok')
"#;

const CLOSE_AT_ONCE: &str = r#"
import socket
l = socket.socket(); l.bind(('0.0.0.0', 8080)); l.listen()
print('ready', flush=True)
c, _ = l.accept(); c.close()
import time; time.sleep(5)
"#;

#[test]
fn connect_timeout_and_broken_pipe() {
    let d = Vnetd::start("exec-timeout", TWO_HOSTS);
    d.ctl_ok(&["-n", "red", "sysctl", "set", "net.inet.tcp.keepinit=1000"]);
    let _peer = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-c", CLOSE_AT_ONCE]);
        c.stdout(Stdio::null());
        c
    });
    wait_served(&d, "blue", 1);
    let out = run_ok(d.exec("red", &["python3", "-c", TIMEOUT_AND_EPIPE]));
    assert_eq!(out.trim(), "ok");
}

#[test]
fn vnetctl_exec_exits_with_the_programs_status() {
    let d = Vnetd::start("exec-status", TWO_HOSTS);
    let code = |c: &mut Command| c.stderr(Stdio::null()).status().unwrap().code();
    assert_eq!(code(&mut d.exec("red", &["sh", "-c", "exit 7"])), Some(7));
    assert_eq!(code(&mut d.exec("red", &["true"])), Some(0));
    // No such program: 127, as a shell says.
    assert_eq!(
        code(&mut d.exec("red", &["/nonexistent/program"])),
        Some(127)
    );
    // No such vnet: vnetctl's own failure, and the program never runs.
    let dir = scratch("status");
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());
    assert_eq!(code(&mut d.exec("ghost", &["sh", "-c", &touch])), Some(2));
    assert!(!marker.exists(), "the program ran without its vnet");
    // The environment says which vnet.
    let out = run_ok(d.exec("blue", &["sh", "-c", "echo $VNET"]));
    assert_eq!(out.trim(), "blue");
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time (user + system, clock ticks) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_server_whose_vnet_is_destroyed_goes_quiet() {
    let d = Vnetd::start("exec-destroyed", TWO_HOSTS);
    let dir = scratch("destroyed");
    let server = Bg::spawn({
        let mut c = d.exec("blue", &["python3", "-m", "http.server", "8000"]);
        c.current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    });
    wait_listening(&d, "blue", "10.0.0.2:8000");
    d.ctl_ok(&["vnet", "del", "blue"]);
    std::thread::sleep(Duration::from_millis(300));
    // Its listener can never have a connection again: the server waits,
    // it does not spin on accept.
    let pid = server.0.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used < 20, "the server used {used} ticks in a second");
    let mut server = server;
    assert!(server.0.try_wait().unwrap().is_none(), "the server died");
    let _ = std::fs::remove_dir_all(&dir);
}
