//! Links with loss and delay in the simulation driver: transfers still
//! complete intact, and a run replays exactly from its seed.

mod common;

use std::net::IpAddr;

use common::*;
use vnet::driver::sim::Sim;
use vnet::ifnet::{self, Impairment};
use vnet::{Duration, stack};

fn lossy(seed: u64, loss: f64) -> (Sim, Transfer, u64) {
    let mut sim = Sim::new(seed);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for (v, s) in [(&a, 1u64), (&b, 2u64)] {
        sim.with(v, || {
            ifnet::push_tx_stage(
                "eth0",
                Box::new(Impairment::new(Duration::from_millis(5), loss, seed ^ s)),
            )
        })
        .unwrap();
    }
    let t = tcp_transfer(
        &mut sim,
        &b,
        &a,
        "10.0.0.2:9".parse().unwrap(),
        2 << 20,
        Duration::from_secs(900),
    );
    let polls = sim.polls();
    (sim, t, polls)
}

#[test]
fn a_transfer_completes_intact_over_a_link_with_five_percent_loss() {
    let (sim, t, _) = lossy(51, 0.05);
    assert_eq!(t.received, 2 << 20);
    assert_eq!(t.recv_sha, t.sent_sha);
    // The loss really happened: the wire dropped frames.
    let a = sim.registry().by_name("a").unwrap();
    let dropped: u64 = a
        .enter(|| {
            ifnet::with_ifnet("eth0", |i| {
                i.tx_wire()
                    .unwrap()
                    .stats()
                    .drop_stage
                    .iter()
                    .map(|(_, n)| *n)
                    .sum()
            })
        })
        .unwrap();
    assert!(dropped > 50, "only {dropped} frames lost");
}

#[test]
fn the_same_seed_replays_exactly_and_another_seed_differs() {
    let (s1, _, p1) = lossy(52, 0.05);
    let (s2, _, p2) = lossy(52, 0.05);
    let (s3, _, p3) = lossy(53, 0.05);
    assert_eq!((s1.now(), p1), (s2.now(), p2));
    assert_ne!((s1.now(), p1), (s3.now(), p3));
}

#[test]
fn delay_is_applied_per_link() {
    let mut sim = Sim::new(54);
    let (a, _b) = pair(&mut sim, "a", "b", 0);
    sim.with(&a, || {
        ifnet::push_tx_stage(
            "eth0",
            Box::new(Impairment::new(Duration::from_millis(40), 0.0, 1)),
        )
    })
    .unwrap();
    // Resolve the neighbor first so the round trip is one echo each way.
    let dst: IpAddr = "10.0.0.2".parse().unwrap();
    assert!(ping(&mut sim, &a, dst).is_some());
    let t0 = sim.now();
    assert!(ping(&mut sim, &a, dst).is_some());
    let rtt = sim.now() - t0;
    assert!(
        rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(60),
        "rtt {rtt}"
    );
    assert!(sim.with(&a, stack::stats).unwrap().ip_out >= 2);
}

#[test]
fn the_step_cap_turns_endless_work_at_one_instant_into_an_error() {
    let mut sim = Sim::new(55);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let addr = "10.0.0.2:9".parse().unwrap();
    let l = sim
        .with(&b, || vnet::stack::socket::tcp_listen(addr, 4, false))
        .unwrap();
    let _c = sim
        .with(&a, || vnet::stack::socket::tcp_connect(addr, None))
        .unwrap();
    sim.set_step_cap(1);
    assert_eq!(
        sim.run_until_idle(),
        Err(vnet::driver::sim::SimError::StepCap(1))
    );
    sim.set_step_cap(1000);
    sim.run_until(Duration::from_secs(1), |s| {
        s.with(&b, || vnet::stack::socket::tcp_accept(l)).is_ok()
    })
    .unwrap();
}
