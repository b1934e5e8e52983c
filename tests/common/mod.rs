//! Helpers shared by the integration tests: building small topologies in the
//! simulation driver and running traffic through them.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError, SocketId, TcpState};
use vnet::stack::{self};
use vnet::vnet::Vnet;
use vnet::{Duration, ifnet};

/// Creates vnets `a` and `b` joined by an epair `eth0`-`eth0`, up, with
/// `a4`/`b4` (IPv4 /24) and `a6`/`b6` (IPv6 /64) addresses.
pub fn pair(sim: &mut Sim, a: &str, b: &str, n: u8) -> (Arc<Vnet>, Arc<Vnet>) {
    let va = sim.create(a).unwrap();
    let vb = sim.create(b).unwrap();
    ifnet::epair(&va, "eth0", &vb, "eth0").unwrap();
    for (v, host) in [(&va, 1u8), (&vb, 2u8)] {
        sim.with(v, || {
            ifnet::set_up("eth0", true).unwrap();
            stack::addr_add("eth0", format!("10.0.{n}.{host}/24").parse().unwrap()).unwrap();
            stack::addr_add("eth0", format!("fd00:{n}::{host}/64").parse().unwrap()).unwrap();
        });
    }
    (va, vb)
}

/// An ICMP echo request (v4 or v6) with this identifier and sequence.
pub fn echo_request(v6: bool, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// Pings `dst` from vnet `from`; returns the replying address, or `None`
/// if no reply came within 5 s of simulated time.
pub fn ping(sim: &mut Sim, from: &Arc<Vnet>, dst: IpAddr) -> Option<IpAddr> {
    let ident = 0x4242;
    let id = sim.with(from, || socket::icmp_open(ident)).unwrap();
    let v6 = dst.is_ipv6();
    sim.with(from, || socket::icmp_send(id, &echo_request(v6, ident, 1, b"vnet-ping"), dst))
        .unwrap();
    let mut got = None;
    let _ = sim.run_until(Duration::from_secs(5), |s| {
        let mut buf = [0u8; 256];
        match s.with(from, || socket::icmp_recv(id, &mut buf)) {
            Ok((n, src)) => {
                let reply_type = if v6 { 129 } else { 0 };
                if n >= 8 && buf[0] == reply_type && &buf[8..n] == b"vnet-ping" {
                    got = Some(src);
                    return true;
                }
                false
            }
            Err(_) => false,
        }
    });
    sim.with(from, || socket::close(id)).unwrap();
    got
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Result of a transfer.
pub struct Transfer {
    pub sent_sha: [u8; 32],
    pub recv_sha: [u8; 32],
    pub received: usize,
}

/// Sends `len` bytes over TCP from `client` to a listener in `server` at
/// `addr`; returns the checksums of what was sent and what arrived.
pub fn tcp_transfer(
    sim: &mut Sim,
    server: &Arc<Vnet>,
    client: &Arc<Vnet>,
    addr: SocketAddr,
    len: usize,
    timeout: Duration,
) -> Transfer {
    let data = pattern(len, 7);
    let lst = sim
        .with(server, || socket::tcp_listen(addr, 8, false))
        .unwrap();
    let c = sim.with(client, || socket::tcp_connect(addr, None)).unwrap();
    let mut srv: Option<SocketId> = None;
    let mut sent = 0usize;
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let mut closed = false;
    let mut buf = vec![0u8; 256 * 1024];
    let res = sim.run_until(timeout, |s| {
        if srv.is_none() {
            srv = s.with(server, || socket::tcp_accept(lst)).ok().map(|(id, _)| id);
        }
        if sent < data.len() {
            if let Ok(n) = s.with(client, || socket::send(c, &data[sent..])) {
                sent += n;
            }
        } else if !closed {
            s.with(client, || socket::close(c)).unwrap();
            closed = true;
        }
        if let Some(id) = srv {
            loop {
                match s.with(server, || socket::recv(id, &mut buf)) {
                    Ok(0) => return true,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        received += n;
                    }
                    Err(SockError::WouldBlock) => break,
                    Err(e) => panic!("server recv: {e}"),
                }
            }
        }
        false
    });
    res.unwrap_or_else(|e| panic!("transfer of {len} bytes: {e}; received {received}"));
    if let Some(id) = srv {
        sim.with(server, || socket::close(id)).unwrap();
    }
    sim.with(server, || socket::close(lst)).unwrap();
    let _ = sim.run_for(Duration::from_millis(100));
    Transfer {
        sent_sha: Sha256::digest(&data).into(),
        recv_sha: hasher.finalize().into(),
        received,
    }
}

/// Waits for a connect to finish; returns its state and pending error.
pub fn wait_connect(sim: &mut Sim, v: &Arc<Vnet>, id: SocketId) -> (TcpState, Option<SockError>) {
    let _ = sim.run_until(Duration::from_secs(120), |s| {
        s.with(v, || socket::tcp_state(id)) != Ok(TcpState::Connecting)
    });
    let st = sim.with(v, || socket::tcp_state(id)).unwrap();
    let err = sim.with(v, || socket::take_error(id)).unwrap();
    (st, err)
}
