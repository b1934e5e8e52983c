//! Destroying a vnet is synchronous and complete: connections are reset,
//! interfaces destroyed or given back home, memory and registry entries
//! returned.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};
use vnet::vnet::{RegistryError, VnetId};
use vnet::{Duration, ifnet, stack};

#[test]
fn destroying_a_vnet_resets_its_connections_and_reports_what_it_released() {
    let mut sim = Sim::new(41);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let addr: SocketAddr = "10.0.0.2:7".parse().unwrap();
    let lst = sim.with(&b, || socket::tcp_listen(addr, 4, false)).unwrap();
    let c = sim.with(&a, || socket::tcp_connect(addr, None)).unwrap();
    let mut srv = None;
    sim.run_until(Duration::from_secs(5), |s| {
        srv = s.with(&b, || socket::tcp_accept(lst)).ok().map(|x| x.0);
        srv.is_some()
    })
    .unwrap();
    let srv = srv.unwrap();
    sim.with(&a, || socket::send(c, b"partial")).unwrap();
    let vnets_before = sim.registry().len();

    let report = sim.destroy(a.id(), false).unwrap();
    assert_eq!(report.vnets, [a.id()]);
    assert_eq!(report.sockets_closed, 1);
    assert_eq!(report.connections_reset, 1);
    assert_eq!(report.interfaces_destroyed, 2, "lo0 and eth0");
    assert_eq!(report.addresses_removed, 4, "127.0.0.1, ::1 and eth0's two");
    assert!(report.routes_removed >= 2);
    assert_eq!(report.subsystems, ["resolv", "inet", "ifnet"]);
    assert_eq!(report.wake, [b.id()], "the reset goes to b");
    assert!(sim.registry().by_name("a").is_none());
    assert!(sim.registry().get(a.id()).is_none());
    assert_eq!(sim.registry().len(), vnets_before - 1);

    let mut buf = [0u8; 64];
    let mut seen = Vec::new();
    sim.run_until(Duration::from_secs(5), |s| {
        match s.with(&b, || socket::recv(srv, &mut buf)) {
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                false
            }
            Err(SockError::ConnReset) => true,
            Err(_) => false,
        }
    })
    .expect("the peer sees a reset");
    let eth0 = sim
        .with(&b, ifnet::list)
        .unwrap()
        .into_iter()
        .find(|i| i.name == "eth0")
        .unwrap();
    assert!(!eth0.running, "the far end of the epair is gone");
}

#[test]
fn vnet0_and_parents_are_refused_unless_recursive() {
    let mut sim = Sim::new(42);
    assert_eq!(sim.destroy(VnetId::VNET0, true), Err(RegistryError::Vnet0));
    let p = sim.create("parent").unwrap();
    let c = sim.registry().create("child", Some(p.id()), 0).unwrap();
    let g = sim
        .registry()
        .create("grandchild", Some(c.id()), 0)
        .unwrap();
    assert_eq!(
        sim.destroy(p.id(), false),
        Err(RegistryError::HasChildren {
            name: "parent".into(),
            children: 1
        })
    );
    assert!(sim.registry().by_name("parent").is_some());
    let r = sim.destroy(p.id(), true).unwrap();
    assert_eq!(r.vnets, [g.id(), c.id(), p.id()], "children first");
    assert_eq!(sim.registry().len(), 1);
}

#[test]
fn a_borrowed_interface_goes_back_home_when_the_borrower_dies() {
    let mut sim = Sim::new(43);
    let home = sim.create("home").unwrap();
    let far = sim.create("far").unwrap();
    let guest = sim.create("guest").unwrap();
    ifnet::epair(&home, "veth0", &far, "eth0").unwrap();
    ifnet::vmove(&home, "veth0", &guest).unwrap();
    assert!(
        sim.with(&home, ifnet::list)
            .unwrap()
            .iter()
            .all(|i| i.name != "veth0")
    );
    sim.with(&guest, || {
        ifnet::set_up("veth0", true).unwrap();
        stack::addr_add("veth0", "10.9.0.1/24".parse().unwrap()).unwrap();
    });
    let r = sim.destroy(guest.id(), false).unwrap();
    assert_eq!(r.interfaces_returned, 1);
    assert_eq!(r.interfaces_destroyed, 1, "only guest's own lo0");
    let back = sim.with(&home, ifnet::list).unwrap();
    let v = back
        .iter()
        .find(|i| i.name == "veth0")
        .expect("veth0 is home");
    assert!(!v.up);
    assert_eq!(
        sim.with(&home, stack::addrs).unwrap().len(),
        2,
        "it came back without guest's address"
    );
    // And it works at home.
    for (v, i, a) in [
        (&home, "veth0", "10.9.0.1/24"),
        (&far, "eth0", "10.9.0.2/24"),
    ] {
        sim.with(v, || {
            ifnet::set_up(i, true).unwrap();
            stack::addr_add(i, a.parse().unwrap()).unwrap();
        });
    }
    let dst: IpAddr = "10.9.0.2".parse().unwrap();
    assert_eq!(ping(&mut sim, &home, dst), Some(dst));
}
