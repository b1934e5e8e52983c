//! Many vnets worked on by several threads at once: each thread drives its
//! own vnets while another reads every vnet's state, and the real-time
//! driver moves a transfer between two vnets on two worker threads.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use sha2::{Digest, Sha256};
use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};
use vnet::vnet::Registry;
use vnet::{Duration, ifnet, stack};

#[test]
fn four_threads_drive_sixteen_pairs_while_a_fifth_reads_them_all() {
    let reg = Registry::new(71);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (reg, stop, reads) = (reg.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for v in reg.list() {
                    if v.enter(stack::stats).is_ok() {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                let mut sim = Sim::with_registry(reg);
                let pairs: Vec<_> = (0..4)
                    .map(|i| pair(&mut sim, &format!("c{t}-{i}"), &format!("s{t}-{i}"), 0))
                    .collect();
                let flows: Vec<Flow> = pairs
                    .iter()
                    .enumerate()
                    .map(|(i, (c, s))| Flow {
                        server: s.clone(),
                        client: c.clone(),
                        addr: "10.0.0.2:443".parse().unwrap(),
                        data: pattern(512 << 10, (t * 10 + i) as u64),
                    })
                    .collect();
                tcp_flows(&mut sim, &flows, Duration::from_secs(300))
            })
        })
        .collect();
    for w in workers {
        for t in w.join().expect("worker thread") {
            assert_eq!(t.recv_sha, t.sent_sha);
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(reg.len(), 33);
}

#[test]
fn the_realtime_driver_moves_a_transfer_between_two_workers() {
    let reg = Registry::new(72);
    let a = reg.create("a", None, 0).unwrap();
    let b = reg.create("b", None, 0).unwrap();
    ifnet::epair(&a, "eth0", &b, "eth0").unwrap();
    for (v, ip) in [(&a, "10.0.0.1/24"), (&b, "10.0.0.2/24")] {
        v.enter(|| {
            ifnet::set_up("eth0", true).unwrap();
            stack::addr_add("eth0", ip.parse().unwrap()).unwrap();
        });
    }
    let addr: SocketAddr = "10.0.0.2:5201".parse().unwrap();
    let data = Arc::new(pattern(8 << 20, 3));
    let lst = b.enter(|| socket::tcp_listen(addr, 4, false)).unwrap();
    let c = a.enter(|| socket::tcp_connect(addr, None)).unwrap();
    let mut rt = Realtime::start(2);
    rt.adopt(&a);
    rt.adopt(&b);
    let result = Arc::new(Mutex::new(None));
    {
        let data = data.clone();
        let mut sent = 0;
        rt.add_app(
            &a,
            Box::new(move |_| {
                while sent < data.len() {
                    match socket::send(c, &data[sent..]) {
                        Ok(n) => sent += n,
                        Err(_) => return AppCtl::Continue,
                    }
                }
                socket::close(c).unwrap();
                AppCtl::Done
            }),
        );
    }
    {
        let result = result.clone();
        let mut srv = None;
        let mut h = Sha256::new();
        let mut n_total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        rt.add_app(
            &b,
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
                            *result.lock().unwrap() =
                                Some((n_total, <[u8; 32]>::from(h.clone().finalize())));
                            return AppCtl::Done;
                        }
                        Ok(n) => {
                            h.update(&buf[..n]);
                            n_total += n;
                        }
                        Err(SockError::WouldBlock) => return AppCtl::Continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }),
        );
    }
    let start = std::time::Instant::now();
    while rt.apps_running() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    rt.stop();
    let (n, sha) = result.lock().unwrap().expect("transfer finished");
    assert_eq!(n, data.len());
    assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&*data)));
}
