//! Vnets are isolated: the same addresses and ports in several vnets at
//! once, each pair seeing only its own traffic.

mod common;

use std::net::SocketAddr;

use common::*;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};
use vnet::{Duration, ifnet, stack};

#[test]
fn three_pairs_with_the_same_addresses_and_ports_do_not_see_each_other() {
    let mut sim = Sim::new(11);
    let pairs: Vec<_> = (0..3)
        .map(|i| pair(&mut sim, &format!("a{i}"), &format!("b{i}"), 0))
        .collect();
    let addr: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let flows: Vec<Flow> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| Flow {
            server: b.clone(),
            client: a.clone(),
            addr,
            data: pattern(1 << 20, 100 + i as u64),
        })
        .collect();
    let results = tcp_flows(&mut sim, &flows, Duration::from_secs(120));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.received, 1 << 20, "pair {i}");
        assert_eq!(r.recv_sha, r.sent_sha, "pair {i} got another pair's bytes");
    }
    // Every frame a pair's server received was sent by its own client.
    for (a, b) in &pairs {
        let sent = sim.with(a, ifnet::list).unwrap();
        let got = sim.with(b, ifnet::list).unwrap();
        let tx = sent
            .iter()
            .find(|i| i.name == "eth0")
            .unwrap()
            .stats
            .opackets;
        let rx = got
            .iter()
            .find(|i| i.name == "eth0")
            .unwrap()
            .stats
            .ipackets;
        assert_eq!(tx, rx, "{} -> {}", a.name(), b.name());
    }
}

#[test]
fn two_vnets_each_bind_tcp_port_80_while_one_vnet_refuses_a_second_bind() {
    let mut sim = Sim::new(12);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let any80: SocketAddr = "0.0.0.0:80".parse().unwrap();
    let la = sim
        .with(&a, || socket::tcp_listen(any80, 4, false))
        .unwrap();
    let lb = sim
        .with(&b, || socket::tcp_listen(any80, 4, false))
        .unwrap();
    assert_eq!(
        sim.with(&a, || socket::tcp_listen(any80, 4, false)),
        Err(SockError::AddrInUse)
    );
    assert_eq!(sim.with(&a, || socket::local_addr(la)).unwrap().port(), 80);
    assert_eq!(sim.with(&b, || socket::local_addr(lb)).unwrap().port(), 80);
    // Each listener answers its own vnet's address.
    let ca = sim
        .with(&a, || {
            socket::tcp_connect("10.0.0.2:80".parse().unwrap(), None)
        })
        .unwrap();
    let cb = sim
        .with(&b, || {
            socket::tcp_connect("10.0.0.1:80".parse().unwrap(), None)
        })
        .unwrap();
    sim.run_until(Duration::from_secs(5), |s| {
        s.with(&b, || socket::tcp_accept(lb)).is_ok()
            && s.with(&a, || socket::tcp_accept(la)).is_ok()
    })
    .unwrap();
    for (v, c) in [(&a, ca), (&b, cb)] {
        assert_eq!(sim.with(v, || socket::take_error(c)).unwrap(), None);
    }
    assert_eq!(sim.with(&a, stack::stats).unwrap().tcp_passive_opens, 1);
    assert_eq!(sim.with(&b, stack::stats).unwrap().tcp_passive_opens, 1);
}
