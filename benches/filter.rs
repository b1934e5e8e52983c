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

/// A measurement: its label and the call it times.
type Case<'a> = (String, Box<dyn FnMut() -> u32 + 'a>);

/// Nanoseconds per call, `n` calls per round, for each case. The cases take
/// turns within every round, so that a noisy moment (the machine has two
/// cores and is shared) falls on all of them alike.
fn measure(rounds: usize, n: u32, cases: &mut [Case<'_>]) -> Vec<Vec<f64>> {
    // Warm up caches and branch predictors.
    for (_, f) in cases.iter_mut() {
        for _ in 0..n / 10 {
            black_box(f());
        }
    }
    let mut out = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..n {
                black_box(f());
            }
            out[i].push(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    out
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
    let expr_text = "`arp or (ip and src net 10.1.0.0/24)`";
    let now = vnet::Instant::from_millis(0);
    let stage = || {
        let checks = vec![
            Check::allow_mac(&[EthernetAddress(MAC)]).expect("compiles"),
            Check::allow_src(&[cidr]).expect("compiles"),
        ];
        Filter::new("bench".to_string(), checks)
    };
    let (mut stage_pass, handle) = stage();
    let (mut stage_drop, _) = stage();
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (what, frame) in [("passes", &pass), ("dropped", &drop)] {
        let f = frame.as_slice();
        let spoof = &spoof;
        let expr = &expr;
        cases.push((
            format!("allow_mac + allow_src /24, IPv4 TCP {what}: vnet"),
            Box::new(move || chain(spoof, black_box(f), Program::run)),
        ));
        cases.push((
            format!("allow_mac + allow_src /24, IPv4 TCP {what}: libpcap bpf_filter"),
            Box::new(move || chain(spoof, black_box(f), libpcap_filter)),
        ));
        cases.push((
            format!("{expr_text}, IPv4 TCP {what}: vnet"),
            Box::new(move || expr.run(black_box(f))),
        ));
        cases.push((
            format!("{expr_text}, IPv4 TCP {what}: libpcap bpf_filter"),
            Box::new(move || libpcap_filter(expr, black_box(f))),
        ));
    }
    for (what, frame, filter) in [
        ("passes", &pass, &mut stage_pass),
        ("dropped", &drop, &mut stage_drop),
    ] {
        let f = frame.as_slice();
        cases.push((
            format!("Filter stage (the same two checks, counters), IPv4 TCP {what}"),
            Box::new(move || {
                u32::from(filter.process(now, black_box(f)) == vnet::ifnet::Verdict::Pass)
            }),
        ));
    }
    let results = measure(rounds, n, &mut cases);
    let labels: Vec<String> = cases.into_iter().map(|(l, _)| l).collect();
    for (label, v) in labels.iter().zip(results) {
        row(label, "ns", v);
    }
    assert!(handle.passed() > 0);
}
