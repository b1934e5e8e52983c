//! Benchmarks of vnetd's host side and control plane, each beside its
//! reference in the same run:
//!
//! 1. TCP throughput between a vnet and a Linux namespace through a TAP,
//!    both directions (kernel side: `nc` receiving, Python `sendfile` sending), next to the same
//!    traffic between two namespaces over veth;
//! 2. vnets created per second through vnetctl's protocol (a batch file);
//! 3. the time `vnetd --config` takes to bring up a 1,000-vnet topology.
//!
//! Run: `cargo bench --bench host` as root (with iproute2 and
//! netcat-openbsd). Results are medians with [min – max] over the rounds.

#[path = "../tests/kernel/mod.rs"]
mod os;
#[path = "support/report.rs"]
mod report;

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use os::{Netns, Proc, sh};
use report::row;
use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::stack::socket::{self, SockError, TcpState};
use vnet::stack::sysctl;
use vnet::vnet::{Registry, Vnet};
use vnet::{ifnet, stack};

const BYTES: usize = 1 << 30;

/// The kernel-side sender: Python's `socket.sendfile` from a sparse file of
/// `BYTES` bytes, so that the sender costs little CPU (a `head | nc` pipe
/// took more CPU than the path it measured on two cores).
fn sender() -> String {
    let file = std::env::temp_dir().join(format!("vnetbench-{}.zero", std::process::id()));
    if !file.exists() {
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(BYTES as u64).unwrap();
    }
    let py = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    format!(
        "{py} -c 'import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2]))); s.sendfile(open(\"{}\", \"rb\")); s.shutdown(socket.SHUT_WR); s.recv(1)'",
        file.display()
    )
}

/// vnet → namespace: the vnet sends `BYTES`, `nc` in the namespace reads
/// them; timed from connect to the last byte acknowledged.
fn vnet_to_ns(rt: &Realtime, v: &Arc<Vnet>, ns: &Netns, port: u16) -> f64 {
    let _sink = Proc(
        ns.cmd(&format!("nc -l -N 10.50.0.1 {port} > /dev/null"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let dst: SocketAddr = format!("10.50.0.1:{port}").parse().unwrap();
    let c = v.enter(|| socket::tcp_connect(dst, None)).unwrap();
    let chunk: Arc<Vec<u8>> = Arc::new(vec![0x5a; 1 << 16]);
    let done = Arc::new(Mutex::new(None));
    let d2 = Arc::clone(&done);
    let (mut sent, mut closed) = (0usize, false);
    let t0 = Instant::now();
    rt.add_app(
        v,
        Box::new(move |_| {
            while sent < BYTES {
                match socket::send(c, &chunk[..(BYTES - sent).min(chunk.len())]) {
                    Ok(n) => sent += n,
                    Err(SockError::WouldBlock) => return AppCtl::Continue,
                    Err(e) => panic!("send: {e}"),
                }
            }
            if !closed {
                socket::close(c).unwrap();
                closed = true;
            }
            // Closed by us: the handle is gone once everything is acked.
            if socket::tcp_state(c) != Ok(TcpState::Connected) {
                *d2.lock().unwrap() = Some(t0.elapsed());
                return AppCtl::Done;
            }
            AppCtl::Continue
        }),
    );
    while done.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let el = done.lock().unwrap().unwrap();
    BYTES as f64 * 8.0 / el.as_secs_f64() / 1e9
}

/// namespace → vnet: `nc` in the namespace sends `BYTES` to a sink in the
/// vnet; timed from accept to end of stream.
fn ns_to_vnet(rt: &Realtime, v: &Arc<Vnet>, ns: &Netns, port: u16) -> f64 {
    let lst = v
        .enter(|| socket::tcp_listen(format!("0.0.0.0:{port}").parse().unwrap(), 4, false))
        .unwrap();
    let done = Arc::new(Mutex::new(None));
    let d2 = Arc::clone(&done);
    let (mut conn, mut got, mut t0) = (None, 0usize, Instant::now());
    let mut buf = vec![0u8; 1 << 18];
    rt.add_app(
        v,
        Box::new(move |_| {
            if conn.is_none() {
                conn = socket::tcp_accept(lst).ok().map(|x| x.0);
                t0 = Instant::now();
            }
            let Some(id) = conn else {
                return AppCtl::Continue;
            };
            loop {
                match socket::recv(id, &mut buf) {
                    Ok(0) => {
                        *d2.lock().unwrap() = Some((got, t0.elapsed()));
                        let _ = socket::close(id);
                        let _ = socket::close(lst);
                        return AppCtl::Done;
                    }
                    Ok(n) => got += n,
                    Err(SockError::WouldBlock) => return AppCtl::Continue,
                    Err(e) => panic!("recv: {e}"),
                }
            }
        }),
    );
    let _src = Proc(
        ns.cmd(&format!("{} 10.50.0.2 {port}", sender()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while done.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (n, el) = done.lock().unwrap().unwrap();
    assert_eq!(n, BYTES);
    n as f64 * 8.0 / el.as_secs_f64() / 1e9
}

/// The same traffic between two namespaces over veth.
fn veth(rounds: usize, mtu: usize) -> (Vec<f64>, Vec<f64>) {
    let a = Netns::new("va");
    let b = Netns::new("vb");
    let (ia, ib) = (
        format!("vb{}a", std::process::id()),
        format!("vb{}b", std::process::id()),
    );
    sh(&[
        "ip", "link", "add", &ia, "type", "veth", "peer", "name", &ib,
    ]);
    sh(&["ip", "link", "set", &ia, "netns", &a.0]);
    sh(&["ip", "link", "set", &ib, "netns", &b.0]);
    sh(&["ip", "-n", &a.0, "addr", "add", "10.50.0.1/24", "dev", &ia]);
    sh(&["ip", "-n", &b.0, "addr", "add", "10.50.0.2/24", "dev", &ib]);
    sh(&[
        "ip",
        "-n",
        &a.0,
        "link",
        "set",
        &ia,
        "mtu",
        &mtu.to_string(),
        "up",
    ]);
    sh(&[
        "ip",
        "-n",
        &b.0,
        "link",
        "set",
        &ib,
        "mtu",
        &mtu.to_string(),
        "up",
    ]);
    let mut out = Vec::new();
    for r in 0..rounds {
        let port = 7000 + r + mtu % 1000;
        let _sink = Proc(
            a.cmd(&format!("nc -l -N 10.50.0.1 {port} > /dev/null"))
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let st = b
            .cmd(&format!("{} 10.50.0.1 {port}", sender()))
            .status()
            .unwrap();
        assert!(st.success());
        out.push(BYTES as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9);
    }
    (out.clone(), out)
}

fn bench_tap(rounds: usize, mtu: usize) {
    println!("\n### TCP through a TAP, one stream, 1 GiB per round, MTU {mtu} on both sides\n");
    println!("| setup | median | range | rounds |\n|---|---|---|---|");
    let ns = Netns::new("tap");
    let host = format!("vb{}t", std::process::id() % 100_000);
    let reg = Registry::new(9);
    let v = reg.create("v", None, 0).unwrap();
    let mut rt = Realtime::start(2);
    rt.adopt(&v);
    ifnet::tap(&v, "eth0", &host, rt.host_io()).unwrap();
    sh(&["ip", "link", "set", &host, "netns", &ns.0]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.50.0.1/24",
        "dev",
        &host,
    ]);
    let m = mtu.to_string();
    sh(&["ip", "-n", &ns.0, "link", "set", &host, "mtu", &m, "up"]);
    v.enter(|| {
        ifnet::set_mtu("eth0", mtu).unwrap();
        ifnet::set_up("eth0", true).unwrap();
        stack::addr_add("eth0", "10.50.0.2/24".parse().unwrap()).unwrap();
        sysctl::set("net.inet.tcp.sendspace", "4194304").unwrap();
        sysctl::set("net.inet.tcp.recvspace", "4194304").unwrap();
    });
    rt.kick(&v);
    let (mut out, mut inn) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let base = 6000 + (mtu % 1000) as u16;
        out.push(vnet_to_ns(&rt, &v, &ns, base + r as u16));
        inn.push(ns_to_vnet(&rt, &v, &ns, base + 100 + r as u16));
    }
    row(
        &format!("vnet → Linux namespace through a TAP (receiver: nc), MTU {mtu}"),
        "Gbit/s",
        out,
    );
    row(
        &format!("Linux namespace → vnet through a TAP (sender: Python sendfile), MTU {mtu}"),
        "Gbit/s",
        inn,
    );
    rt.stop();
    drop(reg);
    let (veth, _) = veth(rounds, mtu);
    row(
        &format!("**Linux**: namespace → namespace over veth (sendfile → nc), MTU {mtu}"),
        "Gbit/s",
        veth,
    );
}

fn vnetd(sock: &std::path::Path, extra: &[&str]) -> (Proc, Duration) {
    let t0 = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vnetd"))
        .arg("--socket")
        .arg(sock)
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    loop {
        if UnixStream::connect(sock).is_ok() {
            let o = Command::new(env!("CARGO_BIN_EXE_vnetctl"))
                .arg("--socket")
                .arg(sock)
                .args(["vnet", "list"])
                .output()
                .unwrap();
            if o.status.success() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (Proc(child), t0.elapsed())
}

fn bench_control(rounds: usize) {
    println!("\n### Control plane\n");
    println!("| operation | median | range | rounds |\n|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("vnetbench-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let n = 10_000;
    let batch = dir.join("add.batch");
    std::fs::write(
        &batch,
        (0..n)
            .map(|i| format!("vnet add b{i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut rate = Vec::new();
    for _ in 0..rounds {
        let (d, _) = vnetd(&sock, &["--empty"]);
        let t0 = Instant::now();
        let st = Command::new(env!("CARGO_BIN_EXE_vnetctl"))
            .arg("--socket")
            .arg(&sock)
            .arg("-batch")
            .arg(&batch)
            .status()
            .unwrap();
        assert!(st.success());
        rate.push(f64::from(n) / t0.elapsed().as_secs_f64());
        drop(d);
    }
    row(
        &format!("vnets created through vnetctl -batch ({n} `vnet add` lines)"),
        "per s",
        rate,
    );
    let cfg = dir.join("thousand.toml");
    let mut t = String::new();
    for i in 0..1000 {
        t += &format!(
            "[vnet.h{i}.link.eth0]\ntype = \"epair\"\npeer = {{ vnet = \"vnet0\", name = \"p{i}\" }}\nup = true\naddr = [\"10.{}.{}.2/24\"]\n\n",
            i / 250,
            i % 250
        );
    }
    std::fs::write(&cfg, t).unwrap();
    let mut up = Vec::new();
    for _ in 0..rounds {
        let (d, el) = vnetd(&sock, &["--config", cfg.to_str().unwrap()]);
        up.push(el.as_secs_f64() * 1000.0);
        drop(d);
    }
    row(
        "`vnetd --config` with 1,000 vnets, each an epair to vnet0 and an address, until it answers",
        "ms",
        up,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let rounds = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        5
    };
    // Optional section names (control, tap) pick a subset.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    println!("## vnetd benchmarks ({rounds} rounds each)");
    if want("control") {
        bench_control(rounds);
    }
    if want("tap") {
        if root {
            for mtu in [1500, 65520] {
                bench_tap(rounds, mtu);
            }
        } else {
            println!("\nTAP benchmarks skipped: they need root.");
        }
    }
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("vnetbench-{}.zero", std::process::id())),
    );
}
