//! The core benchmarks of issue 2, each side by side with its Linux
//! reference measured in the same run:
//!
//! 1. TCP throughput, one stream, two vnets over an epair in one process,
//!    against iperf3 between two Linux network namespaces over a veth pair;
//! 2. memory per idle vnet with 10,000 vnets, against an empty Linux
//!    network namespace;
//! 3. vnet create+destroy rate, against `unshare(CLONE_NEWNET)`;
//! 4. the cost of entering and leaving a vnet scope;
//! 5. what the firewall costs a TCP stream: none, against a drop policy
//!    with connection tracking and 2 or 22 rules on both ends.
//!
//! Run: `cargo bench --bench core` (as root for the Linux references;
//! without root they are reported as skipped). `-- --quick` runs fewer
//! rounds. Results are medians with [min – max] over the rounds.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/report.rs"]
mod report;
#[path = "support/throughput.rs"]
mod throughput;

use counting_alloc::{Counting, live};
use report::row;

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vnet::vnet::{self as vn, CurVnet, Registry};
use vnet::{ifnet, stack};

#[global_allocator]
static ALLOC: Counting = Counting;

fn skipped(what: &str, why: &str) {
    println!("| {what} | skipped: {why} | | |");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two namespaces of our own joined by a veth pair, removed on drop.
struct VethPair {
    a: String,
    b: String,
}

impl VethPair {
    fn new(tag: &str) -> Result<VethPair, String> {
        let pid = std::process::id();
        let p = VethPair {
            a: format!("vnetbench-{pid}-{tag}a"),
            b: format!("vnetbench-{pid}-{tag}b"),
        };
        let (ia, ib) = (format!("vb{pid}{tag}a"), format!("vb{pid}{tag}b"));
        sh(&["ip", "netns", "add", &p.a])?;
        sh(&["ip", "netns", "add", &p.b])?;
        sh(&[
            "ip", "link", "add", &ia, "type", "veth", "peer", "name", &ib,
        ])?;
        sh(&["ip", "link", "set", &ia, "netns", &p.a])?;
        sh(&["ip", "link", "set", &ib, "netns", &p.b])?;
        for (ns, i, addr) in [(&p.a, &ia, "10.77.0.1/24"), (&p.b, &ib, "10.77.0.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", i])?;
            sh(&["ip", "-n", ns, "link", "set", i, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(p)
    }

    fn iperf(&self, secs: u32) -> Result<f64, String> {
        let mut server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.a,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "10.77.0.1",
                "-p",
                "5299",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.b,
            "iperf3",
            "-c",
            "10.77.0.1",
            "-p",
            "5299",
            "-t",
            &secs.to_string(),
            "-J",
        ]);
        let _ = server.kill();
        let _ = server.wait();
        let v: serde_json::Value = serde_json::from_str(&out?).map_err(|e| e.to_string())?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .ok_or_else(|| "no rate in iperf3's output".into())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.a]);
        let _ = sh(&["ip", "netns", "del", &self.b]);
    }
}

fn bench_throughput(rounds: usize, mib: usize) {
    println!("\n### TCP throughput, one stream\n");
    println!("| setup | median | range | rounds |\n|---|---|---|---|");
    for (mtu, buf) in [(1500, 1usize << 20), (65535, 4 << 20)] {
        for workers in [2, 1] {
            let (reg, red, blue, rt) = throughput::world(mtu, workers, buf);
            let mut v = Vec::new();
            for r in 0..rounds {
                let s = throughput::stream(&rt, &red, &blue, mib << 20, 6000 + r as u16);
                assert_eq!(s.corrupt_chunks, 0, "corrupt stream");
                v.push(s.gbps());
            }
            row(
                &format!(
                    "vnet epair, MTU {mtu}, {workers} worker thread(s), {} MiB buffers",
                    buf >> 20
                ),
                "Gbit/s",
                v,
            );
            rt.stop();
            drop(reg);
        }
    }
    let why = if !is_root() {
        Some("needs root")
    } else if !have("iperf3") {
        Some("iperf3 not installed")
    } else {
        None
    };
    match why {
        Some(w) => skipped("Linux veth between two netns, iperf3", w),
        None => match VethPair::new("t") {
            Ok(p) => {
                let v: Result<Vec<f64>, String> = (0..rounds).map(|_| p.iperf(3)).collect();
                match v {
                    Ok(v) => {
                        row(
                            "Linux veth between two netns, iperf3 -t 3, MTU 1500 (GSO/TSO on)",
                            "Gbit/s",
                            v,
                        );
                    }
                    Err(e) => skipped("Linux veth between two netns, iperf3", &e),
                }
            }
            Err(e) => skipped("Linux veth between two netns, iperf3", &e),
        },
    }
}

/// Throughput of one stream with and without a firewall on both vnets:
/// `allow in state established` and `allow in proto tcp` in front of a
/// `drop` input policy (every packet is looked up in the state table),
/// alone and behind 20 TCP rules whose ports never match (each is read).
fn bench_firewall(rounds: usize, mib: usize) {
    println!("\n### Firewall cost, one TCP stream, MTU 1500, 1 worker\n");
    println!("| setup | median | range | rounds |\n|---|---|---|---|");
    for filler in [None, Some(0), Some(20)] {
        let (reg, red, blue, rt) = throughput::world(1500, 1, 1 << 20);
        if let Some(n) = filler {
            for v in [&red, &blue] {
                v.enter(|| {
                    for p in 0..n {
                        stack::firewall::add(&format!("drop in proto tcp to any port {p}"))
                            .expect("rule");
                    }
                    stack::firewall::add("allow in state established").expect("rule");
                    stack::firewall::add("allow in proto tcp").expect("rule");
                    stack::firewall::set_policy(
                        stack::firewall::Hook::In,
                        stack::firewall::Action::Drop,
                    )
                })
                .expect("firewall");
            }
        }
        let mut v = Vec::new();
        for r in 0..rounds {
            let s = throughput::stream(&rt, &red, &blue, mib << 20, 7000 + r as u16);
            assert_eq!(s.corrupt_chunks, 0, "corrupt stream");
            v.push(s.gbps());
        }
        let what = match filler {
            None => "no rules (the firewall inactive)".to_string(),
            Some(n) => format!(
                "{} rules, drop policy, connection tracking, on both vnets",
                n + 2
            ),
        };
        row(&what, "Gbit/s", v);
        rt.stop();
        drop(reg);
    }
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map(|pages| pages * 4.0)
        .unwrap_or(0.0)
}

fn idle_vnets(reg: &Registry, n: usize) {
    let v0 = reg.vnet0();
    for i in 0..n {
        let v = reg.create(&format!("idle{i}"), None, 0).unwrap();
        ifnet::epair(&v, "eth0", &v0, &format!("i{i}")).unwrap();
        v.enter(|| {
            ifnet::set_up("eth0", true).unwrap();
            stack::addr_add("eth0", "10.0.0.2/24".parse().unwrap()).unwrap();
            stack::route_add(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.0.0.1".parse().unwrap()),
                None,
            )
            .unwrap();
        });
    }
}

fn meminfo_kib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0.0)
}

fn bench_memory(rounds: usize) {
    println!("\n### Memory per idle vnet (lo0, one epair end, one address, a default route)\n");
    println!("| setup | median | range | rounds |\n|---|---|---|---|");
    let n = 10_000;
    let mut heap = Vec::new();
    let mut rss = Vec::new();
    for round in 0..rounds {
        let reg = Registry::new(1);
        let (h0, r0) = (live(), rss_kib());
        idle_vnets(&reg, n);
        heap.push((live() - h0) as f64 / n as f64 / 1024.0);
        if round == 0 {
            // Later rounds reuse pages the allocator kept: only the first
            // one says what the process grew by.
            rss.push((rss_kib() - r0) / n as f64);
        }
        drop(reg);
    }
    row(
        &format!("vnet, live heap per vnet with {n} vnets (counting allocator)"),
        "KiB",
        heap,
    );
    row(
        &format!("vnet, resident set growth per vnet with {n} vnets (first round)"),
        "KiB",
        rss,
    );
    if !is_root() {
        skipped("Linux empty network namespace, kernel memory", "needs root");
        return;
    }
    let k = 200;
    let mut per = Vec::new();
    for r in 0..rounds.min(3) {
        let names: Vec<String> = (0..k)
            .map(|i| format!("vnetbench-{}-m{r}-{i}", std::process::id()))
            .collect();
        let kernel = || meminfo_kib("Slab:") + meminfo_kib("Percpu:") + meminfo_kib("KernelStack:");
        let before = kernel();
        let mut made = Vec::new();
        for n in &names {
            if sh(&["ip", "netns", "add", n]).is_ok() {
                made.push(n.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let after = kernel();
        for n in &made {
            let _ = sh(&["ip", "netns", "del", n]);
        }
        if !made.is_empty() {
            per.push((after - before) / made.len() as f64);
        }
    }
    if per.is_empty() {
        skipped("Linux empty network namespace", "ip netns add failed");
    } else {
        row(
            &format!(
                "Linux empty netns (`ip netns add` x {k}, growth of Slab + Percpu + KernelStack)"
            ),
            "KiB",
            per,
        );
    }
}

fn bench_rates(rounds: usize, n: usize) {
    println!("\n### Create + destroy rate\n");
    println!("| setup | median | range | rounds |\n|---|---|---|---|");
    let mut bare = Vec::new();
    let mut full = Vec::new();
    for _ in 0..rounds {
        let reg = Registry::new(2);
        let t = Instant::now();
        for i in 0..n {
            let v = reg.create(&format!("r{i}"), None, 0).unwrap();
            reg.destroy(v.id(), false).unwrap();
        }
        bare.push(n as f64 / t.elapsed().as_secs_f64());
        let v0 = reg.vnet0();
        let t = Instant::now();
        for i in 0..n / 4 {
            let v = reg.create(&format!("f{i}"), None, 0).unwrap();
            ifnet::epair(&v, "eth0", &v0, &format!("f{i}")).unwrap();
            v.enter(|| {
                ifnet::set_up("eth0", true).unwrap();
                stack::addr_add("eth0", "10.0.0.2/24".parse().unwrap()).unwrap();
            });
            reg.destroy(v.id(), false).unwrap();
            v0.enter(|| ifnet::destroy(&format!("f{i}"))).unwrap();
        }
        full.push((n / 4) as f64 / t.elapsed().as_secs_f64());
    }
    row("vnet create+destroy (lo0 and stack)", "per s", bare);
    row(
        "vnet create+destroy with an epair and an address",
        "per s",
        full,
    );
    if !is_root() {
        skipped("Linux unshare(CLONE_NEWNET)", "needs root");
        return;
    }
    let mut linux = Vec::new();
    for _ in 0..rounds.min(3) {
        let k = 300;
        let r = std::thread::spawn(move || {
            let t = Instant::now();
            for _ in 0..k {
                // SAFETY: unshare only changes this thread's network
                // namespace (each call makes a new one and drops the last);
                // the thread exits right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
            }
            Some(k as f64 / t.elapsed().as_secs_f64())
        })
        .join()
        .ok()
        .flatten();
        if let Some(x) = r {
            linux.push(x);
        }
    }
    if linux.is_empty() {
        skipped("Linux unshare(CLONE_NEWNET)", "unshare failed");
    } else {
        row(
            "Linux unshare(CLONE_NEWNET) create+delete, direct syscall",
            "per s",
            linux,
        );
    }
}

fn bench_scope(rounds: usize) {
    println!("\n### Entering and leaving a vnet scope\n");
    println!("| operation | median | range | rounds |\n|---|---|---|---|");
    let reg = Registry::new(3);
    let v = reg.create("s", None, 0).unwrap();
    let n = 10_000_000u32;
    let mut enter = Vec::new();
    let mut access = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            let g = CurVnet::set(black_box(&v));
            black_box(&g);
            drop(g);
        }
        enter.push(t.elapsed().as_nanos() as f64 / f64::from(n));
        let _g = CurVnet::set(&v);
        let t = Instant::now();
        for _ in 0..n / 10 {
            black_box(vn::with::<stack::Inet, _>(|i| i.tunables.ip_ttl).unwrap());
        }
        access.push(t.elapsed().as_nanos() as f64 / f64::from(n / 10));
    }
    row("CURVNET_SET + CURVNET_RESTORE (CurVnet guard)", "ns", enter);
    row(
        "reach per-vnet state in scope (vnet::with, locks the vnet)",
        "ns",
        access,
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = std::env::args().any(|a| a == "--quick");
    // Optional section names (scope, rates, memory, throughput, firewall)
    // pick a subset.
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let rounds = if quick { 3 } else { 5 };
    println!("## vnet core benchmarks ({rounds} rounds each)");
    if want("scope") {
        bench_scope(rounds);
    }
    if want("rates") {
        bench_rates(rounds, if quick { 20_000 } else { 100_000 });
    }
    if want("memory") {
        bench_memory(rounds.min(3));
    }
    if want("throughput") {
        bench_throughput(rounds, if quick { 512 } else { 2048 });
    }
    if want("firewall") {
        bench_firewall(rounds, if quick { 512 } else { 2048 });
    }
}
