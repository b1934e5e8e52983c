//! Two vnets in one process, joined by an epair, run by the real-time
//! driver on two worker threads: a ping each way, then a TCP transfer whose
//! rate and checksum are printed, then both stacks' counters.
//!
//! Run: `cargo run --release --example two_vnets [MiB] [MTU] [worker threads]`

#[path = "../benches/support/throughput.rs"]
mod throughput;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant as WallClock;

use vnet::driver::realtime::Realtime;
use vnet::stack;
use vnet::stack::socket;
use vnet::vnet::Vnet;

fn ping(rt: &Realtime, from: &Arc<Vnet>, dst: IpAddr) -> Option<std::time::Duration> {
    let v6 = dst.is_ipv6();
    let id = from.enter(|| socket::icmp_open(7)).ok()?;
    let mut msg = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 7, 0, 1];
    msg.extend_from_slice(b"hello");
    let t0 = WallClock::now();
    from.enter(|| socket::icmp_send(id, &msg, dst)).ok()?;
    rt.kick(from);
    let mut buf = [0u8; 64];
    while t0.elapsed() < std::time::Duration::from_secs(2) {
        if from.enter(|| socket::icmp_recv(id, &mut buf)).is_ok() {
            let _ = from.enter(|| socket::close(id));
            return Some(t0.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    None
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let mtu: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1500);
    let workers: usize = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let (reg, red, blue, rt) = throughput::world(mtu, workers, 1 << 20);

    for (from, to, dst) in [
        (&red, "blue", "10.0.0.2"),
        (&blue, "red", "10.0.0.1"),
        (&red, "blue", "fd00::2"),
    ] {
        match ping(&rt, from, dst.parse().unwrap()) {
            Some(t) => println!("ping {} -> {to} ({dst}): reply in {t:?}", from.name()),
            None => println!("ping {} -> {to} ({dst}): no reply", from.name()),
        }
    }

    let st = throughput::stream(&rt, &red, &blue, mib << 20, 5201);
    assert_eq!(st.corrupt_chunks, 0, "the stream arrived corrupted");
    println!(
        "TCP red -> blue: {} MiB in {:.2?} = {:.2} Gbit/s (one stream, MTU {mtu}), every byte checked",
        st.bytes >> 20,
        st.elapsed,
        st.gbps()
    );
    rt.stop();
    for v in [&red, &blue] {
        let st = v.enter(stack::stats).unwrap();
        let nz: Vec<String> = st
            .entries()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("{} counters: {}", v.name(), nz.join(" "));
    }
    let r = reg.destroy(red.id(), false).unwrap();
    println!(
        "destroyed red: {} sockets, {} interfaces, {} addresses, {} routes released",
        r.sockets_closed, r.interfaces_destroyed, r.addresses_removed, r.routes_removed
    );
}
