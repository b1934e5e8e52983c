//! Benchmarks of the socket server, each beside its references in the same
//! run:
//!
//! 1. iperf3, one TCP stream: between two vnets through vnetd (programs
//!    under `vnetctl exec`), between two Linux namespaces over veth, and
//!    from a namespace to the host through slirp4netns and through pasta;
//! 2. 1-byte TCP ping-pong round trips (p50, p99), through vnetd and over
//!    veth, unpinned and with client and server pinned to different cores;
//! 3. TCP connections per second (connect, accept, close), through vnetd
//!    and over veth.
//!
//! Run: `cargo bench --bench sockets` as root, with iproute2, iperf3,
//! slirp4netns and passt installed. `--quick` runs fewer rounds; section
//! names (`iperf`, `latency`, `cps`) pick a subset.
//!
//! The ping-pong and connection programs are this binary itself, run with
//! `pp-server`, `pp-client`, `cps-server` or `cps-client` as first argument:
//! plain `std::net` code, so under `vnetctl exec` it goes through the
//! preload library exactly as any other program does.

#[path = "../tests/daemon/mod.rs"]
mod daemon;
#[path = "../tests/kernel/mod.rs"]
mod os;
#[path = "support/report.rs"]
mod report;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::Vnetd;
use os::{Netns, Proc, sh};
use report::row;

// ---------------------------------------------------------------------------
// The helper programs.

fn pp_server(port: &str) {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap();
    println!("ready");
    let (mut s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        s.write_all(&b).unwrap();
    }
}

fn pp_client(addr: &str, n: usize) {
    let mut s = connect_retry(addr);
    s.set_nodelay(true).unwrap();
    let mut b = [7u8; 1];
    let mut rtt = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= n / 10 {
            rtt.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtt.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{} {}", rtt[rtt.len() / 2], rtt[rtt.len() * 99 / 100]);
}

fn cps_server(port: &str) {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap();
    println!("ready");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    }
}

fn cps_client(addr: &str, n: usize) {
    drop(connect_retry(addr));
    let t0 = Instant::now();
    for _ in 0..n {
        let s = TcpStream::connect(addr).unwrap();
        drop(s);
    }
    println!("{}", n as f64 / t0.elapsed().as_secs_f64());
}

fn connect_retry(addr: &str) -> TcpStream {
    let t0 = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("{addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---------------------------------------------------------------------------
// The setups.

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

/// vnetd (the test suite's helper) with two vnets on an epair of `mtu`:
/// red 10.0.0.1, blue 10.0.0.2.
fn vnetd(mtu: usize) -> Vnetd {
    Vnetd::start(
        &format!("bench-{mtu}"),
        &format!(
            "[vnet.red.link.eth0]\ntype = \"epair\"\npeer = {{ vnet = \"blue\", name = \"eth0\" }}\nup = true\nmtu = {mtu}\naddr = [\"10.0.0.1/24\"]\n\n[vnet.blue.link.eth0]\nup = true\nmtu = {mtu}\naddr = [\"10.0.0.2/24\"]\n"
        ),
    )
}

/// A shell line running `cmd` in `vnet` of `d`, pinned to `cpu`.
fn exec(d: &Vnetd, vnet: &str, cpu: Option<usize>, cmd: &str) -> Command {
    let mut c = Command::new("sh");
    let pin = cpu.map_or(String::new(), |n| format!("taskset -c {n} "));
    // `exec` all the way down: the program is the process killed.
    c.arg("-c").arg(format!(
        "exec {pin}{} --socket {} exec {vnet} -- {cmd}",
        env!("CARGO_BIN_EXE_vnetctl"),
        d.sock.display()
    ));
    c.env("VNET_PRELOAD", daemon::preload());
    c
}

/// Two namespaces over a veth pair: a 10.60.0.1, b 10.60.0.2.
struct Veth(Netns, Netns);

impl Veth {
    fn new() -> Veth {
        let a = Netns::new("ska");
        let b = Netns::new("skb");
        let (ia, ib) = (
            format!("vs{}a", std::process::id()),
            format!("vs{}b", std::process::id()),
        );
        sh(&[
            "ip", "link", "add", &ia, "type", "veth", "peer", "name", &ib,
        ]);
        sh(&["ip", "link", "set", &ia, "netns", &a.0]);
        sh(&["ip", "link", "set", &ib, "netns", &b.0]);
        sh(&["ip", "-n", &a.0, "addr", "add", "10.60.0.1/24", "dev", &ia]);
        sh(&["ip", "-n", &b.0, "addr", "add", "10.60.0.2/24", "dev", &ib]);
        sh(&["ip", "-n", &a.0, "link", "set", &ia, "up"]);
        sh(&["ip", "-n", &b.0, "link", "set", &ib, "up"]);
        Veth(a, b)
    }
}

/// `cmd` pinned to `cpu`, as a shell line that becomes the program.
fn pinned(cpu: Option<usize>, cmd: &str) -> String {
    cpu.map_or(format!("exec {cmd}"), |n| {
        format!("exec taskset -c {n} {cmd}")
    })
}

/// Runs a server command and a client command; returns the client's
/// standard output.
fn pair(mut server: Command, mut client: Command) -> String {
    let mut srv = server
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for "ready" (our helpers) or give iperf3 a moment.
    let mut out = srv.stdout.take().unwrap();
    let _srv = Proc(srv);
    let mut first = [0u8; 1];
    let _ = out.read(&mut first);
    std::thread::sleep(Duration::from_millis(100));
    let o = client.stderr(Stdio::inherit()).output().unwrap();
    assert!(o.status.success(), "client failed: {client:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn iperf_gbps(json: &str) -> f64 {
    let j: serde_json::Value = serde_json::from_str(json).expect("iperf3 JSON");
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// iperf3's server prints nothing before it listens: a ready line for
/// `pair` comes from `echo` first.
fn iperf_server(port: u16) -> String {
    format!("sh -c 'echo r; exec iperf3 -s -1 -p {port}'")
}

fn iperf_client(addr: &str, port: u16, secs: u32) -> String {
    format!("iperf3 -c {addr} -p {port} -t {secs} -J")
}

fn bench_iperf(rounds: usize, secs: u32) {
    println!("\n### iperf3, one TCP stream, {secs} s per round\n");
    println!("| path | median | range | rounds |\n|---|---|---|---|");
    for mtu in [1500, 65520] {
        let d = vnetd(mtu);
        let v: Vec<f64> = (0..rounds)
            .map(|r| {
                let port = 5400 + r as u16;
                iperf_gbps(&pair(
                    exec(&d, "blue", None, &iperf_server(port)),
                    exec(&d, "red", None, &iperf_client("10.0.0.2", port, secs)),
                ))
            })
            .collect();
        row(
            &format!("vnet → vnet through vnetd (epair MTU {mtu})"),
            "Gbit/s",
            v,
        );
    }
    let veth = Veth::new();
    let v: Vec<f64> = (0..rounds)
        .map(|r| {
            let port = 5500 + r as u16;
            iperf_gbps(&pair(
                veth.1.cmd(&pinned(None, &iperf_server(port))),
                veth.0
                    .cmd(&pinned(None, &iperf_client("10.60.0.2", port, secs))),
            ))
        })
        .collect();
    row(
        "netns → netns over veth (MTU 1500, offloads on)",
        "Gbit/s",
        v,
    );
    drop(veth);
    // slirp4netns: the namespace's 10.0.2.2 is the host's loopback.
    let ns = Netns::new("slirp");
    let slirp = Proc(
        Command::new("slirp4netns")
            .args(["--configure", "--mtu=65520", "--netns-type=path"])
            .arg(format!("/run/netns/{}", ns.0))
            .arg("tap0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slirp4netns"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let v: Vec<f64> = (0..rounds)
        .map(|r| {
            let port = 5600 + r as u16;
            let mut srv = Command::new("sh");
            srv.args([
                "-c",
                &format!("echo r; exec iperf3 -s -1 -B 127.0.0.1 -p {port}"),
            ]);
            iperf_gbps(&pair(
                srv,
                ns.cmd(&pinned(None, &iperf_client("10.0.2.2", port, secs))),
            ))
        })
        .collect();
    row("netns → host through slirp4netns (MTU 65520)", "Gbit/s", v);
    drop(slirp);
    drop(ns);
    // pasta: the namespace's loopback port is spliced to the host's.
    let ns = Netns::new("pasta");
    let ports: Vec<u16> = (0..rounds).map(|r| 5700 + r as u16).collect();
    let spec = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let st = Command::new("pasta")
        .args([
            "--config-net",
            "--runas",
            "0:0",
            "-q",
            "-T",
            &spec,
            "--netns",
        ])
        .arg(format!("/run/netns/{}", ns.0))
        .stderr(Stdio::null())
        .status()
        .expect("pasta");
    assert!(st.success(), "pasta did not start");
    std::thread::sleep(Duration::from_millis(300));
    let v: Vec<f64> = ports
        .iter()
        .map(|port| {
            let mut srv = Command::new("sh");
            srv.args([
                "-c",
                &format!("echo r; exec iperf3 -s -1 -B 127.0.0.1 -p {port}"),
            ]);
            iperf_gbps(&pair(
                srv,
                ns.cmd(&pinned(None, &iperf_client("127.0.0.1", *port, secs))),
            ))
        })
        .collect();
    row("netns → host through pasta (spliced, -T)", "Gbit/s", v);
    // pasta exits when its namespace goes.
    drop(ns);
}

fn bench_latency(rounds: usize, n: usize) {
    println!("\n### 1-byte TCP ping-pong, {n} round trips per round (µs)\n");
    println!("| path | p50 median | p50 range | p99 median | rounds |\n|---|---|---|---|---|");
    let d = vnetd(1500);
    let veth = Veth::new();
    for (label, pins) in [
        ("unpinned", (None, None)),
        ("pinned 0/1", (Some(0), Some(1))),
    ] {
        let mut runs: Vec<(f64, f64)> = Vec::new();
        for r in 0..rounds {
            let port = 6000 + r;
            let out = pair(
                exec(&d, "blue", pins.1, &format!("{} pp-server {port}", me())),
                exec(
                    &d,
                    "red",
                    pins.0,
                    &format!("{} pp-client 10.0.0.2:{port} {n}", me()),
                ),
            );
            runs.push(parse2(&out));
        }
        latency_row(&format!("through vnetd, {label}"), runs);
        let mut runs = Vec::new();
        for r in 0..rounds {
            let port = 6100 + r;
            let out = pair(
                veth.1
                    .cmd(&pinned(pins.1, &format!("{} pp-server {port}", me()))),
                veth.0.cmd(&pinned(
                    pins.0,
                    &format!("{} pp-client 10.60.0.2:{port} {n}", me()),
                )),
            );
            runs.push(parse2(&out));
        }
        latency_row(&format!("over veth, {label}"), runs);
    }
}

fn parse2(s: &str) -> (f64, f64) {
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn latency_row(what: &str, runs: Vec<(f64, f64)>) {
    let n = runs.len();
    let (p50, lo, hi) = report::summary(runs.iter().map(|r| r.0).collect());
    let (p99, _, _) = report::summary(runs.iter().map(|r| r.1).collect());
    println!("| {what} | {p50:.1} | {lo:.1} – {hi:.1} | {p99:.1} | {n} |");
}

fn bench_cps(rounds: usize, n: usize) {
    println!("\n### TCP connections per second (connect, accept, close), {n} per round\n");
    println!("| path | median | range | rounds |\n|---|---|---|---|");
    let d = vnetd(1500);
    let v: Vec<f64> = (0..rounds)
        .map(|r| {
            let port = 6200 + r;
            let out = pair(
                exec(&d, "blue", None, &format!("{} cps-server {port}", me())),
                exec(
                    &d,
                    "red",
                    None,
                    &format!("{} cps-client 10.0.0.2:{port} {n}", me()),
                ),
            );
            out.trim().parse().unwrap()
        })
        .collect();
    row("through vnetd", "conn/s", v);
    let veth = Veth::new();
    let v: Vec<f64> = (0..rounds)
        .map(|r| {
            let port = 6300 + r;
            let out = pair(
                veth.1
                    .cmd(&pinned(None, &format!("{} cps-server {port}", me()))),
                veth.0.cmd(&pinned(
                    None,
                    &format!("{} cps-client 10.60.0.2:{port} {n}", me()),
                )),
            );
            out.trim().parse().unwrap()
        })
        .collect();
    row("over veth", "conn/s", v);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("pp-server") => return pp_server(&args[2]),
        Some("pp-client") => return pp_client(&args[2], args[3].parse().unwrap()),
        Some("cps-server") => return cps_server(&args[2]),
        Some("cps-client") => return cps_client(&args[2], args[3].parse().unwrap()),
        _ => {}
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        println!("The socket benchmarks need root (network namespaces); skipped.");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 5 };
    let sections: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with("--")).collect();
    let want = |s: &str| sections.is_empty() || sections.iter().any(|a| *a == s);
    println!("## Socket server benchmarks ({rounds} rounds each)");
    if want("iperf") {
        bench_iperf(rounds, if quick { 3 } else { 5 });
    }
    if want("latency") {
        bench_latency(rounds, if quick { 5_000 } else { 20_000 });
    }
    if want("cps") {
        bench_cps(rounds, if quick { 1_000 } else { 5_000 });
    }
}
