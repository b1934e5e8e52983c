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
    sim.with(from, || {
        socket::icmp_send(id, &echo_request(v6, ident, 1, b"vnet-ping"), dst)
    })
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
#[derive(Debug, Clone)]
pub struct Transfer {
    pub sent_sha: [u8; 32],
    pub recv_sha: [u8; 32],
    pub received: usize,
}

/// One TCP flow: `client` sends `data` to a listener in `server` at `addr`.
pub struct Flow {
    pub server: Arc<Vnet>,
    pub client: Arc<Vnet>,
    pub addr: SocketAddr,
    pub data: Vec<u8>,
}

/// Runs several TCP flows at once to completion; returns, per flow, the
/// checksums of what was sent and what the server received.
pub fn tcp_flows(sim: &mut Sim, flows: &[Flow], timeout: Duration) -> Vec<Transfer> {
    struct St {
        lst: SocketId,
        c: SocketId,
        srv: Option<SocketId>,
        sent: usize,
        closed: bool,
        done: bool,
        hasher: Sha256,
        received: usize,
    }
    let mut st: Vec<St> = flows
        .iter()
        .map(|f| {
            let lst = sim
                .with(&f.server, || socket::tcp_listen(f.addr, 8, false))
                .unwrap();
            let c = sim
                .with(&f.client, || socket::tcp_connect(f.addr, None))
                .unwrap();
            St {
                lst,
                c,
                srv: None,
                sent: 0,
                closed: false,
                done: false,
                hasher: Sha256::new(),
                received: 0,
            }
        })
        .collect();
    let mut buf = vec![0u8; 256 * 1024];
    let res = sim.run_until(timeout, |s| {
        for (f, x) in flows.iter().zip(st.iter_mut()) {
            if x.done {
                continue;
            }
            if x.srv.is_none() {
                x.srv = s
                    .with(&f.server, || socket::tcp_accept(x.lst))
                    .ok()
                    .map(|(id, _)| id);
            }
            if x.sent < f.data.len() {
                if let Ok(n) = s.with(&f.client, || socket::send(x.c, &f.data[x.sent..])) {
                    x.sent += n;
                }
            } else if !x.closed {
                s.with(&f.client, || socket::close(x.c)).unwrap();
                x.closed = true;
            }
            if let Some(id) = x.srv {
                loop {
                    match s.with(&f.server, || socket::recv(id, &mut buf)) {
                        Ok(0) => {
                            x.done = true;
                            break;
                        }
                        Ok(n) => {
                            x.hasher.update(&buf[..n]);
                            x.received += n;
                        }
                        Err(SockError::WouldBlock) => break,
                        Err(e) => panic!("server recv: {e}"),
                    }
                }
            }
        }
        st.iter().all(|x| x.done)
    });
    let got: Vec<usize> = st.iter().map(|x| x.received).collect();
    res.unwrap_or_else(|e| panic!("flows: {e}; received {got:?}"));
    let out = flows
        .iter()
        .zip(st)
        .map(|(f, x)| {
            if let Some(id) = x.srv {
                sim.with(&f.server, || socket::close(id)).unwrap();
            }
            sim.with(&f.server, || socket::close(x.lst)).unwrap();
            Transfer {
                sent_sha: Sha256::digest(&f.data).into(),
                recv_sha: x.hasher.finalize().into(),
                received: x.received,
            }
        })
        .collect();
    let _ = sim.run_for(Duration::from_millis(100));
    out
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
    let flow = Flow {
        server: Arc::clone(server),
        client: Arc::clone(client),
        addr,
        data: pattern(len, 7),
    };
    tcp_flows(sim, &[flow], timeout).remove(0)
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
