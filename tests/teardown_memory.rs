//! Creating and destroying vnets returns all their memory. This test has a
//! binary of its own: it counts every heap byte of the process, which other
//! tests running in parallel would disturb.

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, live};
use vnet::driver::sim::Sim;
use vnet::stack::socket;
use vnet::{ifnet, stack};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn ten_thousand_vnets_created_and_destroyed_leave_no_growth() {
    let mut sim = Sim::new(44);
    let v0 = sim.registry().vnet0();
    let cycle = |sim: &mut Sim, i: usize| {
        let v = sim.create(&format!("v{i}")).unwrap();
        ifnet::epair(&v, "eth0", &v0, &format!("e{i}")).unwrap();
        sim.with(&v, || {
            ifnet::set_up("eth0", true).unwrap();
            stack::addr_add("eth0", "10.0.0.1/24".parse().unwrap()).unwrap();
            stack::route_add(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.0.0.254".parse().unwrap()),
                None,
            )
            .unwrap();
            socket::udp_bind("0.0.0.0:53".parse().unwrap(), false).unwrap();
        });
        let r = sim.destroy(v.id(), false).unwrap();
        assert_eq!(r.sockets_closed, 1);
        // The vnet0 end is useless now; take it away too.
        sim.with(&v0, || ifnet::destroy(&format!("e{i}"))).unwrap();
    };
    for i in 0..1000 {
        cycle(&mut sim, i);
    }
    let before = live();
    for i in 1000..11_000 {
        cycle(&mut sim, i);
    }
    let after = live();
    assert_eq!(sim.registry().len(), 1);
    assert!(
        after - before < 64 * 1024,
        "live heap grew by {} bytes over 10,000 create/destroy cycles",
        after - before
    );
}
