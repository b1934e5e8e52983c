//! Switch forwarding rate, beside Linux's bridge in the same run.
//!
//! 1. In process: frames per second one thread pushes through a learning
//!    switch from one port's wire to another's (a fresh buffer per frame,
//!    as a sending stack makes), at 64 and 1514 bytes.
//! 2. Through the host: an `AF_PACKET` sender (`sendmmsg`, 64 frames a
//!    call) on one veth of a namespace of the run; the frames cross either
//!    Linux's bridge or our switch (both veth peers plugged in as
//!    `af_packet` ports) to a second veth, whose receive counter is read.
//!    Both paths get the same sender and the same two cores.
//!
//! 3. A TCP stream between two vnets on a switch, with anti-spoofing
//!    filters on both ports (source MAC and IP on what each sends,
//!    destination on what each receives) and without, rounds interleaved.
//! 4. What one anti-spoofing filter costs per frame.
//!
//! Run: `cargo bench --bench switch` (the host part as root, with iproute2).

#[path = "../tests/kernel/mod.rs"]
mod os;
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "support/throughput.rs"]
mod throughput;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use os::{Netns, sh};
use report::row;
use vnet::driver::realtime::Realtime;
use vnet::ifnet::bpf::{Check, Filter};
use vnet::ifnet::{self, PortKind, Switch, SwitchMode};
use vnet::vnet::VnetId;

const ROUNDS: usize = 5;
const SRC: [u8; 6] = [2, 0, 0, 0, 0, 0x5a];
const DST: [u8; 6] = [2, 0, 0, 0, 0, 0xd0];

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&DST);
    f[6..12].copy_from_slice(&SRC);
    // IEEE 802 local experimental ethertype: no stack answers it.
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Frames per second through a switch in this process, one thread.
fn in_process(len: usize) -> f64 {
    let sw = Switch::new("bench", SwitchMode::Learning);
    let a = sw.add_port(PortKind::Vnet { ifname: "a".into() }).unwrap();
    let b = sw.add_port(PortKind::Vnet { ifname: "b".into() }).unwrap();
    let c = sw.add_port(PortKind::Vnet { ifname: "c".into() }).unwrap();
    for (p, id) in [(&a, 1), (&b, 2), (&c, 3)] {
        p.to_client().set_rx_owner(Some(VnetId(id)));
    }
    let now = smoltcp::time::Instant::from_secs(1);
    // b makes itself known, so that frames to it are not flooded.
    let mut hello = frame(60);
    hello[..6].copy_from_slice(&SRC);
    hello[6..12].copy_from_slice(&DST);
    b.from_client().send(now, hello, &mut |_, _| ()).unwrap();
    let f = frame(len);
    let mut out = Vec::with_capacity(512);
    let mut n = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(500) {
        for _ in 0..512 {
            let _ = a.from_client().send(now, f.clone(), &mut |_, _| ());
        }
        b.to_client().recv_due(now, &mut out);
        n += out.len() as u64;
        out.clear();
        a.to_client().recv_due(now, &mut out);
        out.clear();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &Netns) {
    let f = std::fs::File::open(format!("/var/run/netns/{}", ns.0)).unwrap();
    // SAFETY: setns(2) on a descriptor we hold; only this thread moves.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Sends `len`-byte frames out of `dev` (in `ns`) as fast as `sendmmsg`
/// allows until `stop`.
fn blast(ns: &Netns, dev: &str, len: usize, stop: &AtomicBool) {
    enter(ns);
    // SAFETY: a raw packet socket; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just returned by socket(2) and is ours alone.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {dev}");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds to a live sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let f = frame(len);
    const BATCH: usize = 64;
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: BATCH headers, each pointing at one iovec over `f`, all
        // alive for the call.
        unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
    }
}

fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let o = std::process::Command::new("ip")
        .args(["-n", &ns.0, "-j", "-s", "link", "show", dev])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// A namespace with veths s0–s0p and d0–d0p, all up; d0 has address DST.
fn veths(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    let n = ns.0.as_str();
    for (a, b) in [("s0", "s0p"), ("d0", "d0p")] {
        sh(&[
            "ip", "-n", n, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
        sh(&["ip", "-n", n, "link", "set", a, "up"]);
        sh(&["ip", "-n", n, "link", "set", b, "up"]);
    }
    sh(&[
        "ip",
        "-n",
        n,
        "link",
        "set",
        "d0",
        "address",
        "02:00:00:00:00:d0",
    ]);
    ns
}

/// Frames per second that reach d0 from a sender on s0, over 1 s.
fn measure(ns: &Netns, len: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (ns, stop) = (Netns(ns.0.clone()), Arc::clone(&stop));
        std::thread::spawn(move || {
            blast(&ns, "s0", len, &stop);
            // Not ours to delete: the caller's Netns owns it.
            std::mem::forget(ns);
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let (r0, t0) = (rx_packets(ns, "d0"), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (r1, dt) = (rx_packets(ns, "d0"), t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    (r1 - r0) as f64 / dt.as_secs_f64()
}

fn linux_bridge(len: usize) -> Vec<f64> {
    let ns = veths("br");
    let n = ns.0.as_str();
    sh(&["ip", "-n", n, "link", "add", "br0", "type", "bridge"]);
    sh(&["ip", "-n", n, "link", "set", "s0p", "master", "br0"]);
    sh(&["ip", "-n", n, "link", "set", "d0p", "master", "br0"]);
    sh(&["ip", "-n", n, "link", "set", "br0", "up"]);
    sh(&[
        "bridge",
        "-n",
        n,
        "fdb",
        "add",
        "02:00:00:00:00:d0",
        "dev",
        "d0p",
        "master",
        "static",
    ]);
    (0..ROUNDS).map(|_| measure(&ns, len)).collect()
}

fn vnet_switch(len: usize) -> Vec<f64> {
    let ns = veths("sw");
    // The ports' sockets are opened in the namespace: by a thread that
    // moved there (the pumps it starts stay there).
    let (tx, rx) = std::sync::mpsc::channel();
    let name = ns.0.clone();
    let setup = std::thread::spawn(move || {
        let ns = Netns(name);
        enter(&ns);
        std::mem::forget(ns);
        let rt = Realtime::start(1);
        let sw = Switch::new("bench", SwitchMode::Learning);
        ifnet::host_port(&sw, "s0p", true, rt.host_io()).unwrap();
        ifnet::host_port(&sw, "d0p", true, rt.host_io()).unwrap();
        tx.send((rt, sw)).unwrap();
    });
    let (rt, sw) = rx.recv().unwrap();
    setup.join().unwrap();
    let r = (0..ROUNDS).map(|_| measure(&ns, len)).collect();
    sw.destroy();
    drop(rt);
    r
}

/// Joins two vnets.
type Join = dyn Fn(&Arc<vnet::vnet::Vnet>, &Arc<vnet::vnet::Vnet>);

/// Two vnets on a learning switch; with `filters`, each port lets its
/// vnet send only from its MAC and addresses and receive only what is for
/// them.
fn switched(filters: bool) -> Box<Join> {
    Box::new(move |red, blue| {
        let sw = Switch::new("bench", SwitchMode::Learning);
        for (v, v4, v6) in [(red, "10.0.0.1", "fd00::1"), (blue, "10.0.0.2", "fd00::2")] {
            ifnet::port(v, "eth0", &sw).unwrap();
            if !filters {
                continue;
            }
            let (mac, tx, rx) = v
                .enter(|| {
                    ifnet::with_ifnet("eth0", |i| {
                        (
                            i.mac(),
                            i.tx_wire().cloned().unwrap(),
                            i.rx_wire().cloned().unwrap(),
                        )
                    })
                })
                .unwrap();
            let mine: Vec<smoltcp::wire::IpCidr> = vec![
                format!("{v4}/32").parse().unwrap(),
                format!("{v6}/128").parse().unwrap(),
            ];
            let out = vec![
                Check::allow_mac(&[mac]).unwrap(),
                Check::allow_src(&mine).unwrap(),
            ];
            tx.push_stage(Box::new(Filter::new("out".into(), out).0));
            let inn = vec![Check::allow_dst(&mine).unwrap()];
            rx.push_stage(Box::new(Filter::new("in".into(), inn).0));
        }
    })
}

fn tcp_through_switch() {
    const MIB: usize = 512;
    for mtu in [1500, 9000] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            for filters in [false, true] {
                let join = switched(filters);
                let (_reg, red, blue, rt) = throughput::world_joined(mtu, 1, 1 << 20, &*join);
                let s = throughput::stream(&rt, &red, &blue, MIB << 20, 6000 + r as u16);
                assert_eq!(s.corrupt_chunks, 0);
                if filters { &mut on } else { &mut off }.push(s.gbps());
            }
        }
        let a = row(
            &format!("TCP through a switch, MTU {mtu}, no filters"),
            "Gbit/s",
            off,
        );
        let b = row(
            &format!("TCP through a switch, MTU {mtu}, anti-spoofing filters on both ports"),
            "Gbit/s",
            on,
        );
        println!(
            "|   loss from filters, MTU {mtu} | {:.1} % | | |",
            (1.0 - b / a) * 100.0
        );
    }
}

/// ns per frame of one port's anti-spoofing check (MAC and source IP) on a
/// TCP segment it passes.
fn filter_cost() {
    let mac = smoltcp::wire::EthernetAddress([2, 0, 0, 0, 0, 1]);
    let mine: Vec<smoltcp::wire::IpCidr> = vec!["10.0.0.1/32".parse().unwrap()];
    let checks = vec![
        Check::allow_mac(&[mac]).unwrap(),
        Check::allow_src(&mine).unwrap(),
    ];
    let (mut f, _) = Filter::new("bench".into(), checks);
    let mut frame = vec![0u8; 1514];
    frame[6..12].copy_from_slice(&mac.0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[23] = 6;
    frame[26..30].copy_from_slice(&[10, 0, 0, 1]);
    frame[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let now = smoltcp::time::Instant::from_secs(1);
    let v = (0..ROUNDS)
        .map(|_| {
            let n = 2_000_000;
            let t0 = Instant::now();
            for _ in 0..n {
                let verdict = ifnet::LinkStage::process(&mut f, now, std::hint::black_box(&frame));
                std::hint::black_box(verdict);
            }
            t0.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    row("anti-spoofing filter (MAC + source IP), per frame", "ns", v);
}

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("| what | median | range | rounds |");
    println!("|---|---|---|---|");
    if want("in_process") {
        for len in [60, 1514] {
            let v = (0..ROUNDS).map(|_| in_process(len) / 1e6).collect();
            row(
                &format!("in-process switch, {len}-byte frames"),
                "Mframes/s",
                v,
            );
        }
    }
    if want("filter_cost") {
        filter_cost();
    }
    if want("tcp") {
        tcp_through_switch();
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        eprintln!("host part skipped: needs root");
        return;
    }
    if want("host") {
        for len in [60, 1514] {
            let v = linux_bridge(len).into_iter().map(|x| x / 1e3).collect();
            row(
                &format!("Linux bridge, veth to veth, {len}-byte frames"),
                "kframes/s",
                v,
            );
            let v = vnet_switch(len).into_iter().map(|x| x / 1e3).collect();
            row(
                &format!("vnet switch, af_packet ports on the same veths, {len}-byte frames"),
                "kframes/s",
                v,
            );
        }
    }
}
