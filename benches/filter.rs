//! The per-frame cost of packet filters, each program measured with our
//! interpreter and with libpcap's own (`bpf_filter`) on the same frames in
//! the same run:
//!
//! 1. a typical anti-spoofing pair, `allow_mac` (one address) then
//!    `allow_src` (one /24), on an IPv4 TCP frame that passes both, and on
//!    one whose source address is outside the /24 (dropped by the second);
//! 2. libpcap's compile of `arp or (ip and src net 10.1.0.0/24)` on the
//!    same two frames;
//! 3. the `Filter` stage as a wire runs it (both checks and the counters).
//!
//! Run: `cargo bench --bench filter` (`-- --quick` for fewer rounds).
//! Results are medians with [min – max] over the rounds, in nanoseconds
//! per frame.

#[path = "support/report.rs"]
mod report;

use report::row;

use std::hint::black_box;
use std::time::Instant;

use smoltcp::wire::{EthernetAddress, IpCidr};
use vnet::ifnet::LinkStage;
use vnet::ifnet::bpf::{self, Check, Filter, Program, libpcap_filter};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

/// An Ethernet + IPv4 + TCP SYN frame from `src` to 10.9.0.1.
fn tcp_frame(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x0b];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[10, 9, 0, 1]);
    f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.resize(60, 0);
    f
}

/// Nanoseconds per call of `f` over `n` calls, per round.
fn time(rounds: usize, n: u32, mut f: impl FnMut() -> u32) -> Vec<f64> {
    // Warm up caches and branch predictors.
    for _ in 0..n / 10 {
        black_box(f());
    }
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect()
}

/// Runs the programs in order as a filter does: the first returning 0
/// decides.
fn chain(programs: &[Program], frame: &[u8], run: impl Fn(&Program, &[u8]) -> u32) -> u32 {
    for p in programs {
        if run(p, frame) == 0 {
            return 0;
        }
    }
    1
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let n: u32 = if quick { 1_000_000 } else { 5_000_000 };

    let cidr: IpCidr = "10.1.0.0/24".parse().expect("a prefix");
    let spoof = vec![
        bpf::allow_mac(&[EthernetAddress(MAC)]).expect("compiles"),
        bpf::allow_src(&[cidr]).expect("compiles"),
    ];
    let expr = bpf::compile("arp or (ip and src net 10.1.0.0/24)").expect("compiles");
    let pass = tcp_frame([10, 1, 0, 5]);
    let drop = tcp_frame([10, 2, 0, 5]);
    assert_eq!(chain(&spoof, &pass, Program::run), 1);
    assert_eq!(chain(&spoof, &drop, Program::run), 0);
    assert_ne!(expr.run(&pass), 0);
    assert_eq!(expr.run(&drop), 0);

    println!(
        "## Packet filters, ns per frame ({rounds} rounds of {n} frames; programs of {} + {} and {} instructions)",
        spoof[0].insns().len(),
        spoof[1].insns().len(),
        expr.insns().len()
    );
    println!();
    println!("| program, frame, interpreter | median | range | rounds |");
    println!("|---|---|---|---|");
    for (what, frame) in [("passes", &pass), ("dropped", &drop)] {
        let f = black_box(frame.as_slice());
        row(
            &format!("allow_mac + allow_src /24, IPv4 TCP {what}: vnet"),
            "ns",
            time(rounds, n, || chain(&spoof, black_box(f), Program::run)),
        );
        row(
            &format!("allow_mac + allow_src /24, IPv4 TCP {what}: libpcap bpf_filter"),
            "ns",
            time(rounds, n, || chain(&spoof, black_box(f), libpcap_filter)),
        );
    }
    for (what, frame) in [("passes", &pass), ("dropped", &drop)] {
        let f = black_box(frame.as_slice());
        row(
            &format!("`arp or (ip and src net 10.1.0.0/24)`, IPv4 TCP {what}: vnet"),
            "ns",
            time(rounds, n, || expr.run(black_box(f))),
        );
        row(
            &format!("`arp or (ip and src net 10.1.0.0/24)`, IPv4 TCP {what}: libpcap bpf_filter"),
            "ns",
            time(rounds, n, || libpcap_filter(&expr, black_box(f))),
        );
    }
    let checks = vec![
        Check::allow_mac(&[EthernetAddress(MAC)]).expect("compiles"),
        Check::allow_src(&[cidr]).expect("compiles"),
    ];
    let (mut filter, handle) = Filter::new("bench".to_string(), checks);
    let now = vnet::Instant::from_millis(0);
    for (what, frame) in [("passes", &pass), ("dropped", &drop)] {
        let f = black_box(frame.as_slice());
        row(
            &format!("Filter stage (the same two checks, counters), IPv4 TCP {what}"),
            "ns",
            time(rounds, n, || {
                u32::from(filter.process(now, black_box(f)) == vnet::ifnet::Verdict::Pass)
            }),
        );
    }
    assert!(handle.passed() > 0);
}
