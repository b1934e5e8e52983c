//! Per-vnet tunables change what the stack does, in that vnet only.

mod common;

use std::net::SocketAddr;

use common::*;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};
use vnet::stack::sysctl;

#[test]
fn the_socket_limit_is_per_vnet() {
    let mut sim = Sim::new(91);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    sim.with(&a, || sysctl::set("kern.ipc.maxsockets", "2"))
        .unwrap();
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    sim.with(&a, || socket::udp_bind(any, false)).unwrap();
    sim.with(&a, || socket::udp_bind(any, false)).unwrap();
    assert_eq!(
        sim.with(&a, || socket::udp_bind(any, false)),
        Err(SockError::NoBufs)
    );
    assert_eq!(SockError::NoBufs.errno(), libc::ENOBUFS);
    for _ in 0..3 {
        sim.with(&b, || socket::udp_bind(any, false)).unwrap();
    }
}

#[test]
fn ephemeral_ports_come_from_the_vnets_range() {
    let mut sim = Sim::new(92);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    sim.with(&a, || {
        sysctl::set("net.inet.ip.portrange.first", "40000").unwrap();
        sysctl::set("net.inet.ip.portrange.last", "40009").unwrap();
    });
    let l = sim
        .with(&b, || {
            socket::tcp_listen("10.0.0.2:80".parse().unwrap(), 16, false)
        })
        .unwrap();
    let mut ports = Vec::new();
    for _ in 0..10 {
        let c = sim
            .with(&a, || {
                socket::tcp_connect("10.0.0.2:80".parse().unwrap(), None)
            })
            .unwrap();
        ports.push(sim.with(&a, || socket::local_addr(c)).unwrap().port());
    }
    assert!(
        ports.iter().all(|p| (40000..=40009).contains(p)),
        "{ports:?}"
    );
    assert_eq!(
        sim.with(&a, || socket::tcp_connect(
            "10.0.0.2:80".parse().unwrap(),
            None
        )),
        Err(SockError::AddrNotAvailable),
        "the range is used up"
    );
    let _ = l;
}

#[test]
fn the_default_ttl_is_what_leaves_the_vnet() {
    let mut sim = Sim::new(93);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    sim.with(&a, || sysctl::set("net.inet.ip.ttl", "7"))
        .unwrap();
    let raw = sim.with(&b, || socket::raw_open(false, 17)).unwrap();
    let s = sim
        .with(&a, || socket::udp_bind("0.0.0.0:0".parse().unwrap(), false))
        .unwrap();
    sim.with(&a, || {
        socket::udp_send_to(s, b"ttl?", "10.0.0.2:9".parse().unwrap())
    })
    .unwrap();
    let mut ttl = None;
    sim.run_until(vnet::Duration::from_secs(5), |s| {
        let mut buf = [0u8; 128];
        match s.with(&b, || socket::raw_recv(raw, &mut buf)) {
            Ok(_) => {
                ttl = Some(buf[8]);
                true
            }
            Err(_) => false,
        }
    })
    .unwrap();
    assert_eq!(ttl, Some(7));
    assert_eq!(sim.with(&b, || sysctl::get("net.inet.ip.ttl")), Ok(64));
    let all = sim.with(&a, sysctl::all).unwrap();
    assert!(all.contains(&("net.inet.ip.ttl", 7)));
    assert_eq!(all.len(), sysctl::TUNABLES.len());
}
