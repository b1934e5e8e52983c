//! A listener holds N connections waiting to be accepted; beyond that, SYNs
//! are dropped (as a full accept queue drops them) and the clients retry.

mod common;

use std::net::SocketAddr;

use common::*;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SocketId, TcpState};
use vnet::{Duration, stack};

#[test]
fn sixty_four_clients_connect_before_the_server_accepts_and_all_are_accepted() {
    let mut sim = Sim::new(31);
    let (client, server) = pair(&mut sim, "client", "server", 0);
    let addr: SocketAddr = "10.0.0.2:8080".parse().unwrap();
    let lst = sim
        .with(&server, || socket::tcp_listen(addr, 64, false))
        .unwrap();
    let conns: Vec<SocketId> = (0..64)
        .map(|_| {
            sim.with(&client, || socket::tcp_connect(addr, None))
                .unwrap()
        })
        .collect();
    sim.run_until(Duration::from_secs(10), |s| {
        conns
            .iter()
            .all(|c| s.with(&client, || socket::tcp_state(*c)) == Ok(TcpState::Connected))
    })
    .expect("all 64 connect while nobody accepts");
    let mut accepted = Vec::new();
    while let Ok((id, peer)) = sim.with(&server, || socket::tcp_accept(lst)) {
        assert_eq!(peer.ip(), "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
        accepted.push(id);
    }
    assert_eq!(accepted.len(), 64);
    // Every accepted socket is a distinct, working connection.
    for (i, c) in conns.iter().enumerate() {
        sim.with(&client, || socket::send(*c, &[i as u8])).unwrap();
    }
    let mut seen = [false; 64];
    sim.run_until(Duration::from_secs(5), |s| {
        for id in &accepted {
            let mut b = [0u8; 4];
            if let Ok(1) = s.with(&server, || socket::recv(*id, &mut b)) {
                seen[usize::from(b[0])] = true;
            }
        }
        seen.iter().all(|x| *x)
    })
    .unwrap();
    assert_eq!(sim.with(&server, stack::stats).unwrap().tcp_listen_drops, 0);
}

#[test]
fn a_full_backlog_drops_syns_until_the_server_accepts() {
    let mut sim = Sim::new(32);
    let (client, server) = pair(&mut sim, "client", "server", 0);
    let addr: SocketAddr = "10.0.0.2:8080".parse().unwrap();
    let lst = sim
        .with(&server, || socket::tcp_listen(addr, 4, false))
        .unwrap();
    let conns: Vec<SocketId> = (0..8)
        .map(|_| {
            sim.with(&client, || socket::tcp_connect(addr, None))
                .unwrap()
        })
        .collect();
    sim.run_for(Duration::from_millis(500)).unwrap();
    let connected = |s: &mut Sim| {
        conns
            .iter()
            .filter(|c| s.with(&client, || socket::tcp_state(**c)) == Ok(TcpState::Connected))
            .count()
    };
    assert_eq!(connected(&mut sim), 4, "only the backlog's worth gets in");
    assert!(sim.with(&server, stack::stats).unwrap().tcp_listen_drops >= 4);
    let mut accepted = 0;
    sim.run_until(Duration::from_secs(30), |s| {
        while s.with(&server, || socket::tcp_accept(lst)).is_ok() {
            accepted += 1;
        }
        accepted == 8
    })
    .expect("the dropped clients retry and get in once there is room");
    assert_eq!(connected(&mut sim), 8);
}
