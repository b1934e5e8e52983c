//! Two vnets in one process, joined by an epair, run by the real-time
//! driver on two worker threads: a ping each way, then a TCP transfer whose
//! rate and checksum are printed, then both stacks' counters.
//!
//! Run: `cargo run --release --example two_vnets [MiB] [MTU]`

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant as WallClock;

use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::stack::socket::{self, SockError};
use vnet::vnet::{Registry, Vnet};
use vnet::{ifnet, stack};

fn setup(v: &Arc<Vnet>, v4: &str, v6: &str, mtu: usize) {
    v.enter(|| {
        ifnet::set_mtu("eth0", mtu).expect("MTU");
        ifnet::set_up("eth0", true).expect("eth0 up");
        stack::addr_add("eth0", v4.parse().unwrap()).expect("IPv4 address");
        stack::addr_add("eth0", v6.parse().unwrap()).expect("IPv6 address");
    });
}

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
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let mtu: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1500);
    let reg = Registry::new(std::process::id().into());
    let red = reg.create("red", None, 0).expect("create red");
    let blue = reg.create("blue", None, 0).expect("create blue");
    ifnet::epair(&red, "eth0", &blue, "eth0").expect("epair");
    setup(&red, "10.0.0.1/24", "fd00::1/64", mtu);
    setup(&blue, "10.0.0.2/24", "fd00::2/64", mtu);
    let mut rt = Realtime::start(2);
    rt.adopt(&red);
    rt.adopt(&blue);

    for (from, to, dst) in [(&red, "blue", "10.0.0.2"), (&blue, "red", "10.0.0.1"), (&red, "blue", "fd00::2")] {
        match ping(&rt, from, dst.parse().unwrap()) {
            Some(t) => println!("ping {} -> {to} ({dst}): reply in {t:?}", from.name()),
            None => println!("ping {} -> {to} ({dst}): no reply", from.name()),
        }
    }

    let addr: SocketAddr = "10.0.0.2:5201".parse().unwrap();
    let lst = blue.enter(|| socket::tcp_listen(addr, 4, false)).expect("listen");
    let c = red.enter(|| socket::tcp_connect(addr, None)).expect("connect");
    let total = mib << 20;
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut sent = 0usize;
    rt.add_app(
        &red,
        Box::new(move |_| {
            while sent < total {
                let at = sent % chunk.len();
                let n = (total - sent).min(chunk.len() - at);
                match socket::send(c, &chunk[at..at + n]) {
                    Ok(k) => sent += k,
                    Err(_) => return AppCtl::Continue,
                }
            }
            let _ = socket::close(c);
            AppCtl::Done
        }),
    );
    let done = Arc::new(Mutex::new(None));
    let d2 = done.clone();
    let expect: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut srv, mut got, mut bad) = (None, 0usize, 0usize);
    let mut buf = vec![0u8; 1 << 18];
    let t0 = WallClock::now();
    rt.add_app(
        &blue,
        Box::new(move |_| {
            if srv.is_none() {
                srv = socket::tcp_accept(lst).ok().map(|x| x.0);
            }
            let Some(id) = srv else { return AppCtl::Continue };
            loop {
                match socket::recv(id, &mut buf) {
                    Ok(0) => {
                        *d2.lock().unwrap() = Some((got, bad, t0.elapsed()));
                        return AppCtl::Done;
                    }
                    Ok(n) => {
                        // The stream repeats `expect`; compare it piecewise.
                        let mut off = 0;
                        while off < n {
                            let at = (got + off) % expect.len();
                            let len = (n - off).min(expect.len() - at);
                            if buf[off..off + len] != expect[at..at + len] {
                                bad += 1;
                            }
                            off += len;
                        }
                        got += n;
                    }
                    Err(SockError::WouldBlock) => return AppCtl::Continue,
                    Err(e) => panic!("receive: {e}"),
                }
            }
        }),
    );
    while rt.apps_running() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (got, bad, el) = done.lock().unwrap().take().expect("transfer finished");
    assert_eq!(bad, 0, "the stream arrived corrupted");
    println!(
        "TCP red -> blue: {} MiB in {:.2?} = {:.2} Gbit/s (one stream, MTU {mtu}), content verified",
        got >> 20,
        el,
        got as f64 * 8.0 / el.as_secs_f64() / 1e9
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
