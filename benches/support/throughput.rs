//! One TCP stream between two vnets joined by an epair, on the real-time
//! driver: shared by the `two_vnets` example and the `core` benchmark.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallClock};

use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::stack::socket::{self, SockError};
use vnet::stack::sysctl;
use vnet::vnet::{Registry, Vnet};
use vnet::{ifnet, stack};

/// What a run measured.
pub struct Stream {
    pub bytes: usize,
    pub elapsed: Duration,
    pub corrupt_chunks: usize,
}

impl Stream {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

fn setup(v: &Arc<Vnet>, v4: &str, v6: &str, mtu: usize, bufsize: usize) {
    v.enter(|| {
        ifnet::set_mtu("eth0", mtu).expect("MTU");
        ifnet::set_up("eth0", true).expect("eth0 up");
        stack::addr_add("eth0", v4.parse().unwrap()).expect("IPv4 address");
        stack::addr_add("eth0", v6.parse().unwrap()).expect("IPv6 address");
        let b = bufsize.to_string();
        sysctl::set("net.inet.tcp.sendspace", &b).expect("sendspace");
        sysctl::set("net.inet.tcp.recvspace", &b).expect("recvspace");
    });
}

/// Two vnets `red` (10.0.0.1, fd00::1) and `blue` (10.0.0.2, fd00::2) on an
/// epair with this MTU, adopted by a real-time driver with `workers`
/// threads.
pub fn world(
    mtu: usize,
    workers: usize,
    bufsize: usize,
) -> (Arc<Registry>, Arc<Vnet>, Arc<Vnet>, Realtime) {
    world_joined(mtu, workers, bufsize, &|red, blue| {
        ifnet::epair(red, "eth0", blue, "eth0").expect("epair")
    })
}

/// The same two vnets, their `eth0`s made by `join` (an epair, ports of a
/// switch).
pub fn world_joined(
    mtu: usize,
    workers: usize,
    bufsize: usize,
    join: &dyn Fn(&Arc<Vnet>, &Arc<Vnet>),
) -> (Arc<Registry>, Arc<Vnet>, Arc<Vnet>, Realtime) {
    let reg = Registry::new(u64::from(std::process::id()));
    let red = reg.create("red", None, 0).expect("create red");
    let blue = reg.create("blue", None, 0).expect("create blue");
    join(&red, &blue);
    setup(&red, "10.0.0.1/24", "fd00::1/64", mtu, bufsize);
    setup(&blue, "10.0.0.2/24", "fd00::2/64", mtu, bufsize);
    let mut rt = Realtime::start(workers);
    rt.adopt(&red);
    rt.adopt(&blue);
    (reg, red, blue, rt)
}

/// Sends `total` bytes of a known pattern from `red` to `blue` over one TCP
/// connection and checks every byte on arrival.
pub fn stream(rt: &Realtime, red: &Arc<Vnet>, blue: &Arc<Vnet>, total: usize, port: u16) -> Stream {
    let addr: SocketAddr = format!("10.0.0.2:{port}").parse().unwrap();
    let lst = blue
        .enter(|| socket::tcp_listen(addr, 4, false))
        .expect("listen");
    let c = red
        .enter(|| socket::tcp_connect(addr, None))
        .expect("connect");
    let pattern: Arc<Vec<u8>> = Arc::new((0..65536u32).map(|i| (i * 7 + 3) as u8).collect());
    let chunk = Arc::clone(&pattern);
    let mut sent = 0usize;
    rt.add_app(
        red,
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
    let d2 = Arc::clone(&done);
    let (mut srv, mut got, mut bad) = (None, 0usize, 0usize);
    let mut buf = vec![0u8; 1 << 18];
    let t0 = WallClock::now();
    rt.add_app(
        blue,
        Box::new(move |_| {
            if srv.is_none() {
                srv = socket::tcp_accept(lst).ok().map(|x| x.0);
            }
            let Some(id) = srv else {
                return AppCtl::Continue;
            };
            loop {
                match socket::recv(id, &mut buf) {
                    Ok(0) => {
                        let _ = socket::close(id);
                        let _ = socket::close(lst);
                        *d2.lock().unwrap() = Some((got, bad, t0.elapsed()));
                        return AppCtl::Done;
                    }
                    Ok(n) => {
                        // The stream repeats `pattern`; compare it piecewise.
                        let mut off = 0;
                        while off < n {
                            let at = (got + off) % pattern.len();
                            let len = (n - off).min(pattern.len() - at);
                            if buf[off..off + len] != pattern[at..at + len] {
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
        std::thread::sleep(Duration::from_millis(2));
    }
    let (bytes, corrupt_chunks, elapsed) = done.lock().unwrap().take().expect("transfer finished");
    Stream {
        bytes,
        elapsed,
        corrupt_chunks,
    }
}
