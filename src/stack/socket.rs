//! The socket API of a vnet's stack: TCP (listening with a real backlog,
//! connecting, accepted), UDP, ICMP echo and raw IP sockets, addressed by
//! [`SocketId`], with the errors a BSD or Linux host reports.
//!
//! Every call here acts on the *current vnet* and never blocks: where a
//! host would block, it returns [`SockError::WouldBlock`] and the caller
//! polls the stack (or waits for its driver) and tries again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{icmp, raw, tcp, udp};
use smoltcp::storage::PacketMetadata;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, IpProtocol, IpVersion};

use super::Inet;
use super::ports::{BindError, Proto};
use crate::vnet::limits::{Account, Charge, Resource};
use crate::vnet::{self, CurVnetError};

/// A socket of one vnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// Why a socket call failed. [`SockError::errno`] maps each to the errno a
/// Linux program expects; that mapping lives here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SockError {
    /// Nothing to do yet; poll and retry (`EAGAIN`).
    #[error("operation would block")]
    WouldBlock,
    /// The address and port are taken (`EADDRINUSE`).
    #[error("address already in use")]
    AddrInUse,
    /// The address is not one of this vnet's (`EADDRNOTAVAIL`).
    #[error("cannot assign requested address")]
    AddrNotAvailable,
    /// The peer refused the connection (`ECONNREFUSED`).
    #[error("connection refused")]
    ConnRefused,
    /// The peer reset the connection (`ECONNRESET`).
    #[error("connection reset by peer")]
    ConnReset,
    /// The connection attempt timed out (`ETIMEDOUT`).
    #[error("connection timed out")]
    TimedOut,
    /// No route to the destination's network (`ENETUNREACH`).
    #[error("network is unreachable")]
    NetUnreachable,
    /// The socket is not connected (`ENOTCONN`).
    #[error("socket is not connected")]
    NotConnected,
    /// Writing after the connection was shut down (`EPIPE`).
    #[error("broken pipe")]
    BrokenPipe,
    /// An argument is invalid for this socket (`EINVAL`).
    #[error("invalid argument")]
    InvalidInput,
    /// The vnet's socket limit is reached (`ENOBUFS`).
    #[error("no buffer space available (socket limit of this vnet reached)")]
    NoBufs,
    /// A memory quota (the vnet's, an ancestor's or its owner's) has no
    /// room for the socket's buffers (`ENOBUFS`).
    #[error("no buffer space available (memory quota reached)")]
    NoMem,
    /// No such socket in this vnet (`EBADF`).
    #[error("bad socket")]
    BadSocket,
    /// The datagram does not fit (`EMSGSIZE`).
    #[error("message too long")]
    MsgSize,
    /// The vnet could not be entered (`ENXIO`).
    #[error(transparent)]
    Vnet(#[from] CurVnetError),
}

impl SockError {
    /// The errno for this error.
    pub fn errno(self) -> i32 {
        match self {
            SockError::WouldBlock => libc::EAGAIN,
            SockError::AddrInUse => libc::EADDRINUSE,
            SockError::AddrNotAvailable => libc::EADDRNOTAVAIL,
            SockError::ConnRefused => libc::ECONNREFUSED,
            SockError::ConnReset => libc::ECONNRESET,
            SockError::TimedOut => libc::ETIMEDOUT,
            SockError::NetUnreachable => libc::ENETUNREACH,
            SockError::NotConnected => libc::ENOTCONN,
            SockError::BrokenPipe => libc::EPIPE,
            SockError::InvalidInput => libc::EINVAL,
            SockError::NoBufs | SockError::NoMem => libc::ENOBUFS,
            SockError::BadSocket => libc::EBADF,
            SockError::MsgSize => libc::EMSGSIZE,
            SockError::Vnet(_) => libc::ENXIO,
        }
    }
}

impl From<BindError> for SockError {
    fn from(e: BindError) -> Self {
        match e {
            BindError::InUse => SockError::AddrInUse,
            BindError::Exhausted => SockError::AddrNotAvailable,
        }
    }
}

/// One socket, as `netstat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// Its id.
    pub id: SocketId,
    /// `tcp`, `udp`, `icmp` or `raw`.
    pub proto: &'static str,
    /// The TCP state (`LISTEN`, `ESTABLISHED`, ...); empty for the others.
    pub state: String,
    /// The local address.
    pub local: SocketAddr,
    /// The peer of a connection.
    pub peer: Option<SocketAddr>,
}

/// The state of a TCP socket as a program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Listening.
    Listening,
    /// Connecting (SYN sent).
    Connecting,
    /// Connected: data may flow (including half-closed states).
    Connected,
    /// Closed; `error` says why if it ended abnormally.
    Closed,
}

#[derive(Debug)]
struct TcpTrack {
    h: SocketHandle,
    /// The port binding this socket owns (not for accepted sockets).
    own_port: Option<u16>,
    connecting: bool,
    started: Instant,
    last: tcp::State,
    error: Option<SockError>,
    user_aborted: bool,
    /// When its user closed it; bounds how long it may linger.
    closed_at: Option<Instant>,
}

/// How long a socket closed by its user may wait for the peer to finish
/// (Linux's `tcp_fin_timeout`); then it is reset and freed.
const FIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Kind {
    Listener {
        port: u16,
        addr: Option<IpAddress>,
        /// The one family it accepts (an `AF_INET` socket, or `AF_INET6`
        /// with `IPV6_V6ONLY`); `None` for both.
        family: Option<IpVersion>,
        backlog: usize,
        pool: Vec<SocketHandle>,
    },
    Tcp(TcpTrack),
    Udp {
        h: SocketHandle,
        port: u16,
        /// Closed with datagrams still queued: freed once they are out,
        /// or at this time.
        linger: Option<Instant>,
    },
    Icmp {
        h: SocketHandle,
    },
    Raw {
        h: SocketHandle,
    },
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// Closed by its user; freed once the protocol is done with it.
    closed: bool,
}

/// The sockets of one vnet.
#[derive(Debug, Default)]
pub struct SockTable {
    next: u32,
    map: BTreeMap<SocketId, Entry>,
    deadline: Option<Instant>,
    /// The memory charge of each engine socket.
    mem: std::collections::HashMap<SocketHandle, Charge>,
    /// The vnet's account, charged for buffers.
    pub(super) account: Option<std::sync::Arc<Account>>,
    /// Connections in TIME_WAIT, oldest first: the engine's socket is
    /// gone (so that thousands of them cost the poll nothing), only the
    /// port is held until the time is up.
    timewait: std::collections::VecDeque<(Instant, u16, SocketId)>,
}

impl SockTable {
    /// The next time a socket timer (connect timeout) fires.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Removes a socket from the engine and gives its memory back.
fn unhold(
    sockets: &mut SocketSet<'static>,
    mem: &mut std::collections::HashMap<SocketHandle, Charge>,
    h: SocketHandle,
) {
    sockets.remove(h);
    mem.remove(&h);
}

/// Bytes of a UDP socket's send buffer.
const UDP_SENDSPACE: usize = 256 * 1024;

/// Longest a closed UDP socket waits for its queued datagrams to go out
/// (they wait only for a neighbor's address).
const UDP_LINGER: Duration = Duration::from_secs(1);

impl SockTable {
    /// An empty table whose sockets' buffers are charged to `account`.
    pub(super) fn charged_to(account: std::sync::Arc<Account>) -> SockTable {
        SockTable {
            account: Some(account),
            ..SockTable::default()
        }
    }
}

fn entry(socks: &mut SockTable, id: SocketId) -> Result<&mut Entry, SockError> {
    match socks.map.get_mut(&id) {
        Some(e) if !e.closed => Ok(e),
        _ => Err(SockError::BadSocket),
    }
}

fn to_ip(a: IpAddr) -> IpAddress {
    // An IPv4-mapped IPv6 address means the IPv4 host.
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddress::Ipv4(v4),
            None => IpAddress::Ipv6(v6),
        },
        IpAddr::V4(v4) => IpAddress::Ipv4(v4),
    }
}

fn same_family(a: IpAddress, b: IpAddress) -> bool {
    matches!(
        (a, b),
        (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) | (IpAddress::Ipv6(_), IpAddress::Ipv6(_))
    )
}

fn to_std(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

fn listen_addr(a: IpAddr) -> Option<IpAddress> {
    (!a.is_unspecified()).then(|| to_ip(a))
}

impl Inet {
    fn alloc_id(&mut self) -> Result<SocketId, SockError> {
        if self.socks.map.len() >= self.tunables.max_sockets {
            return Err(SockError::NoBufs);
        }
        self.socks.next = self.socks.next.wrapping_add(1);
        while self.socks.map.contains_key(&SocketId(self.socks.next)) {
            self.socks.next = self.socks.next.wrapping_add(1);
        }
        Ok(SocketId(self.socks.next))
    }

    /// Bytes of buffers a new TCP socket takes.
    fn tcp_bytes(&self) -> usize {
        self.tunables.tcp_recvspace + self.tunables.tcp_sendspace
    }

    /// Takes `bytes` of buffers from the vnet's memory quota (and those
    /// above it).
    fn charge_mem(&self, bytes: usize) -> Result<Charge, SockError> {
        match &self.socks.account {
            None => Ok(Charge::none(Resource::Mem)),
            Some(a) => a.charge(Resource::Mem, bytes as u64).map_err(|e| {
                log::debug!("vnet {}: socket refused: {e}", self.vnet);
                SockError::NoMem
            }),
        }
    }

    /// Adds a socket to the engine, holding its memory charge until it is
    /// removed ([`unhold`]).
    fn hold<T: smoltcp::socket::AnySocket<'static>>(
        &mut self,
        s: T,
        charge: Charge,
    ) -> SocketHandle {
        let h = self.sockets.add(s);
        self.socks.mem.insert(h, charge);
        h
    }

    fn new_tcp(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.tunables.tcp_recvspace]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.tunables.tcp_sendspace]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_hop_limit(Some(self.tunables.ip_ttl));
        s
    }

    fn port_range(&self) -> (u16, u16) {
        (self.tunables.port_first, self.tunables.port_last)
    }

    /// Decides whether a SYN from `remote` may reach listener `id`'s pool,
    /// and prepares the pool for it. A SYN that belongs to a connection the
    /// pool already holds (a retransmission) goes to that socket: idle
    /// LISTEN sockets, which smoltcp would offer it to first, are removed.
    /// A new SYN gets a LISTEN socket while fewer than `backlog`
    /// connections wait for accept; otherwise it is refused (dropped, as a
    /// full accept queue drops it, and the peer retries).
    pub(super) fn admit_syn(&mut self, id: SocketId, remote: IpEndpoint) -> bool {
        let Some(Entry {
            kind:
                Kind::Listener {
                    port,
                    addr,
                    family,
                    backlog,
                    pool,
                },
            ..
        }) = self.socks.map.get_mut(&id)
        else {
            return true;
        };
        let (port, addr, family, backlog) = (*port, *addr, *family, *backlog);
        if family.is_some_and(|f| f != remote.addr.version()) && remote.port != 0 {
            // Not this listener's family: with no LISTEN socket to take it,
            // the SYN is answered with a reset, as by a closed port.
            let idle: Vec<SocketHandle> = pool
                .iter()
                .copied()
                .filter(|h| self.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen)
                .collect();
            pool.retain(|h| !idle.contains(h));
            for h in idle {
                unhold(&mut self.sockets, &mut self.socks.mem, h);
            }
            return true;
        }
        let mut listening = Vec::new();
        let mut pending = 0;
        let mut known = false;
        for h in pool.iter() {
            let s = self.sockets.get::<tcp::Socket>(*h);
            match s.state() {
                tcp::State::Listen => listening.push(*h),
                tcp::State::Closed => {}
                _ => {
                    pending += 1;
                    known |= s.remote_endpoint() == Some(remote);
                }
            }
        }
        if known {
            pool.retain(|h| !listening.contains(h));
            for h in listening {
                unhold(&mut self.sockets, &mut self.socks.mem, h);
            }
            return true;
        }
        if !listening.is_empty() {
            return true;
        }
        if pending >= backlog {
            return false;
        }
        let keepinit = Duration::from_millis(self.tunables.tcp_keepinit_ms);
        // Over the memory quota the SYN is dropped, as by a full backlog.
        let Ok(charge) = self.charge_mem(self.tcp_bytes()) else {
            return false;
        };
        let mut s = self.new_tcp();
        // A handshake the peer never completes frees its slot.
        s.set_timeout(Some(keepinit));
        if s.listen(IpListenEndpoint { addr, port }).is_err() {
            return false;
        }
        let h = self.hold(s, charge);
        if let Some(Entry {
            kind: Kind::Listener { pool, .. },
            ..
        }) = self.socks.map.get_mut(&id)
        {
            pool.push(h);
        }
        true
    }

    /// Tracks TCP state changes (connect results, resets) and frees what is
    /// finished.
    pub(super) fn socket_maintenance(&mut self) {
        let now = self.now;
        let keepinit = Duration::from_millis(self.tunables.tcp_keepinit_ms);
        let mut reap = Vec::new();
        let mut deadline: Option<Instant> = None;
        for (id, e) in self.socks.map.iter_mut() {
            match &mut e.kind {
                Kind::Tcp(t) => {
                    let s = self.sockets.get_mut::<tcp::Socket>(t.h);
                    let st = s.state();
                    if e.closed && !t.user_aborted && s.can_recv() {
                        // Data for a socket its user closed: no one will
                        // read it, so the peer is told at once with a reset
                        // (as Linux does) instead of a window that never
                        // opens again. (`st` stays the state before: the
                        // socket is freed by the next pass, once the reset
                        // is out.)
                        s.abort();
                        t.user_aborted = true;
                        self.stats.tcp_abort_on_data += 1;
                    }
                    if t.connecting {
                        match st {
                            tcp::State::SynSent | tcp::State::SynReceived => {
                                if now >= t.started + keepinit {
                                    s.abort();
                                    t.error = Some(SockError::TimedOut);
                                    t.connecting = false;
                                    self.stats.tcp_connect_timeouts += 1;
                                } else {
                                    let d = t.started + keepinit;
                                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                                }
                            }
                            tcp::State::Closed => {
                                t.connecting = false;
                                if t.error.is_none() && !t.user_aborted {
                                    t.error = Some(SockError::ConnRefused);
                                    self.stats.tcp_refused += 1;
                                }
                            }
                            _ => t.connecting = false,
                        }
                    } else if st == tcp::State::Closed
                        && matches!(
                            t.last,
                            tcp::State::SynReceived
                                | tcp::State::Established
                                | tcp::State::FinWait1
                                | tcp::State::FinWait2
                                | tcp::State::CloseWait
                                | tcp::State::Closing
                        )
                        && !t.user_aborted
                        && t.error.is_none()
                    {
                        t.error = Some(SockError::ConnReset);
                        self.stats.tcp_resets += 1;
                    }
                    if let Some(at) = t.closed_at
                        && st != tcp::State::Closed
                        && st != tcp::State::TimeWait
                    {
                        if now >= at + FIN_TIMEOUT {
                            s.abort();
                            t.user_aborted = true;
                        } else {
                            let d = at + FIN_TIMEOUT;
                            deadline = Some(deadline.map_or(d, |x| x.min(d)));
                        }
                    }
                    t.last = st;
                    if e.closed && st == tcp::State::Closed {
                        reap.push(*id);
                    } else if e.closed && st == tcp::State::TimeWait {
                        // Our last ACK is out: keep only the port for
                        // 2 MSL (a FIN retransmitted meanwhile gets a
                        // reset instead of another ACK).
                        if let Some(p) = t.own_port.take() {
                            let until = now + Duration::from_millis(2 * self.tunables.tcp_msl_ms);
                            self.socks.timewait.push_back((until, p, *id));
                        }
                        reap.push(*id);
                    }
                }
                Kind::Udp {
                    h,
                    linger: Some(until),
                    ..
                } if e.closed => {
                    if now >= *until || self.sockets.get::<udp::Socket>(*h).send_queue() == 0 {
                        reap.push(*id);
                    } else {
                        deadline = Some(deadline.map_or(*until, |x| x.min(*until)));
                    }
                }
                Kind::Listener { pool, .. } => {
                    pool.retain(|h| {
                        if self.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Closed {
                            unhold(&mut self.sockets, &mut self.socks.mem, *h);
                            false
                        } else {
                            true
                        }
                    });
                }
                _ => {}
            }
        }
        while let Some(&(until, port, id)) = self.socks.timewait.front() {
            if until > now {
                deadline = Some(deadline.map_or(until, |x| x.min(until)));
                break;
            }
            self.socks.timewait.pop_front();
            self.ports.release(Proto::Tcp, port, id);
        }
        self.socks.deadline = deadline;
        for id in reap {
            self.free(id);
        }
    }

    /// Removes a socket and its port binding at once.
    fn free(&mut self, id: SocketId) {
        let Some(e) = self.socks.map.remove(&id) else {
            return;
        };
        match e.kind {
            Kind::Listener { port, pool, .. } => {
                for h in pool {
                    unhold(&mut self.sockets, &mut self.socks.mem, h);
                }
                self.ports.release(Proto::Tcp, port, id);
            }
            Kind::Tcp(t) => {
                unhold(&mut self.sockets, &mut self.socks.mem, t.h);
                if let Some(p) = t.own_port {
                    self.ports.release(Proto::Tcp, p, id);
                }
            }
            Kind::Udp { h, port, .. } => {
                unhold(&mut self.sockets, &mut self.socks.mem, h);
                self.ports.release(Proto::Udp, port, id);
            }
            Kind::Icmp { h } | Kind::Raw { h } => {
                unhold(&mut self.sockets, &mut self.socks.mem, h);
            }
        }
    }

    /// Aborts every socket (teardown); returns (sockets, connections reset).
    pub(super) fn abort_all(&mut self) -> (usize, usize) {
        let mut resets = 0;
        let ids: Vec<SocketId> = self.socks.map.keys().copied().collect();
        let n = ids.len();
        for e in self.socks.map.values() {
            let hs: Vec<SocketHandle> = match &e.kind {
                Kind::Listener { pool, .. } => pool.clone(),
                Kind::Tcp(t) => vec![t.h],
                _ => vec![],
            };
            for h in hs {
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                if !matches!(
                    s.state(),
                    tcp::State::Closed | tcp::State::Listen | tcp::State::TimeWait
                ) {
                    resets += 1;
                }
                s.abort();
            }
        }
        self.stats.tcp_resets += resets as u64;
        // The sockets stay in the set until the final poll has sent the
        // resets; the table forgets them now.
        for id in ids {
            if let Some(e) = self.socks.map.get_mut(&id) {
                e.closed = true;
            }
        }
        (n, resets)
    }

    fn entry(&mut self, id: SocketId) -> Result<&mut Entry, SockError> {
        entry(&mut self.socks, id)
    }

    fn check_local(&self, a: Option<IpAddress>) -> Result<(), SockError> {
        match a {
            Some(a) if !self.is_local(a) => Err(SockError::AddrNotAvailable),
            _ => Ok(()),
        }
    }

    /// Checks that `local` is ours, takes a socket number and binds its
    /// port (port 0: an ephemeral one).
    fn bind_port(
        &mut self,
        proto: Proto,
        local: SocketAddr,
        reuse: bool,
    ) -> Result<(SocketId, Option<IpAddress>, u16), SockError> {
        let addr = listen_addr(local.ip());
        self.check_local(addr)?;
        let id = self.alloc_id()?;
        let range = self.port_range();
        let port = self
            .ports
            .bind(proto, addr, local.port(), reuse, id, range, &mut self.rng)?;
        Ok((id, addr, port))
    }

    pub(crate) fn tcp_listen(
        &mut self,
        local: SocketAddr,
        backlog: usize,
        reuse: bool,
    ) -> Result<SocketId, SockError> {
        self.tcp_listen_family(local, backlog, reuse, None)
    }

    /// As `tcp_listen`, accepting only `family` when given.
    pub(crate) fn tcp_listen_family(
        &mut self,
        local: SocketAddr,
        backlog: usize,
        reuse: bool,
        family: Option<IpVersion>,
    ) -> Result<SocketId, SockError> {
        let (id, addr, port) = self.bind_port(Proto::Tcp, local, reuse)?;
        if let Err(e) = self.ports.listen(port, id) {
            self.ports.release(Proto::Tcp, port, id);
            return Err(e.into());
        }
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Listener {
                    port,
                    addr,
                    family,
                    backlog: backlog.clamp(1, 4096),
                    pool: Vec::new(),
                },
                closed: false,
            },
        );
        // One LISTEN socket now; more are made as SYNs arrive.
        self.admit_syn(
            id,
            IpEndpoint::new(IpAddress::Ipv4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        );
        Ok(id)
    }

    pub(crate) fn tcp_accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr), SockError> {
        let Kind::Listener { pool, .. } = &entry(&mut self.socks, id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        let ready = pool.iter().position(|h| {
            matches!(
                self.sockets.get::<tcp::Socket>(*h).state(),
                tcp::State::Established | tcp::State::CloseWait
            )
        });
        let Some(pos) = ready else {
            return Err(SockError::WouldBlock);
        };
        let new_id = self.alloc_id()?;
        let Kind::Listener { pool, .. } = &mut self.entry(id)?.kind else {
            unreachable!("checked above")
        };
        let h = pool.remove(pos);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        // Accepted: from now on it lives as long as its user wants.
        s.set_timeout(None);
        let peer = s
            .remote_endpoint()
            .map(to_std)
            .ok_or(SockError::NotConnected)?;
        let st = s.state();
        self.socks.map.insert(
            new_id,
            Entry {
                kind: Kind::Tcp(TcpTrack {
                    h,
                    own_port: None,
                    connecting: false,
                    started: self.now,
                    last: st,
                    error: None,
                    user_aborted: false,
                    closed_at: None,
                }),
                closed: false,
            },
        );
        self.stats.tcp_passive_opens += 1;
        Ok((new_id, peer))
    }

    /// Chooses the source address for talking to `dst`: the address of the
    /// interface our route leads out of, or `dst` itself when it is ours.
    fn pick_source(&self, dst: IpAddress) -> Result<IpAddress, SockError> {
        if self.is_local(dst) || Self::is_loopback_dst(dst) {
            return Ok(dst);
        }
        let r = self
            .routes
            .lookup(dst, &|_| true)
            .ok_or(SockError::NetUnreachable)?;
        self.source_for(r.ifindex, dst)
            .ok_or(SockError::AddrNotAvailable)
    }

    pub(crate) fn tcp_connect(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        reuse: bool,
    ) -> Result<SocketId, SockError> {
        let dst = to_ip(remote.ip());
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(SockError::InvalidInput);
        }
        let src = match local.and_then(|l| listen_addr(l.ip())) {
            Some(a) => {
                self.check_local(Some(a))?;
                if !same_family(a, dst) {
                    return Err(SockError::InvalidInput);
                }
                a
            }
            None => self.pick_source(dst)?,
        };
        let id = self.alloc_id()?;
        let range = self.port_range();
        let port = self.ports.bind(
            Proto::Tcp,
            Some(src),
            local.map_or(0, |l| l.port()),
            reuse,
            id,
            range,
            &mut self.rng,
        )?;
        let charge = match self.charge_mem(self.tcp_bytes()) {
            Ok(c) => c,
            Err(e) => {
                self.ports.release(Proto::Tcp, port, id);
                return Err(e);
            }
        };
        let mut s = self.new_tcp();
        let res = s.connect(
            self.iface.context(),
            IpEndpoint::new(dst, remote.port()),
            IpEndpoint::new(src, port),
        );
        if res.is_err() {
            self.ports.release(Proto::Tcp, port, id);
            return Err(SockError::InvalidInput);
        }
        let h = self.hold(s, charge);
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Tcp(TcpTrack {
                    h,
                    own_port: Some(port),
                    connecting: true,
                    started: self.now,
                    last: tcp::State::SynSent,
                    error: None,
                    user_aborted: false,
                    closed_at: None,
                }),
                closed: false,
            },
        );
        self.stats.tcp_active_opens += 1;
        Ok(id)
    }

    fn tcp_mut(
        &mut self,
        id: SocketId,
    ) -> Result<(&mut TcpTrack, &mut tcp::Socket<'static>), SockError> {
        let Entry {
            kind: Kind::Tcp(t),
            closed: false,
        } = self.socks.map.get_mut(&id).ok_or(SockError::BadSocket)?
        else {
            return Err(SockError::BadSocket);
        };
        let s = self.sockets.get_mut::<tcp::Socket>(t.h);
        Ok((t, s))
    }

    pub(crate) fn sock_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SockError> {
        if let Ok((t, s)) = self.tcp_mut(id) {
            if let Some(e) = t.error {
                return Err(e);
            }
            if t.connecting || s.state() == tcp::State::SynSent {
                return Err(SockError::WouldBlock);
            }
            if !s.may_send() {
                return Err(if s.state() == tcp::State::Closed {
                    SockError::NotConnected
                } else {
                    SockError::BrokenPipe
                });
            }
            return match s.send_slice(data) {
                Ok(0) if !data.is_empty() => Err(SockError::WouldBlock),
                Ok(n) => Ok(n),
                Err(_) => Err(SockError::BrokenPipe),
            };
        }
        // Not a connected TCP socket: say whether it exists at all.
        self.entry(id).map(|_| ())?;
        Err(SockError::NotConnected)
    }

    pub(crate) fn sock_recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, SockError> {
        let (t, s) = self.tcp_mut(id)?;
        if s.can_recv() {
            return s.recv_slice(buf).map_err(|_| SockError::NotConnected);
        }
        if let Some(e) = t.error {
            return Err(e);
        }
        match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Err(SockError::WouldBlock),
            _ if s.may_recv() => Err(SockError::WouldBlock),
            tcp::State::Closed if t.last == tcp::State::Closed && t.connecting => {
                Err(SockError::NotConnected)
            }
            _ => Ok(0),
        }
    }

    /// Lets `f` fill the free part of a connected socket's send buffer
    /// (the socket server reads a client's bytes straight into it); `f`
    /// returns how many bytes it wrote. Returns `Ok(0)` when the buffer is
    /// full.
    pub(crate) fn tcp_send_with(
        &mut self,
        id: SocketId,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, SockError> {
        let (t, s) = self.tcp_mut(id)?;
        if let Some(e) = t.error {
            return Err(e);
        }
        if t.connecting || !s.may_send() {
            return Err(SockError::NotConnected);
        }
        s.send(|buf| {
            let n = f(buf).min(buf.len());
            (n, n)
        })
        .map_err(|_| SockError::BrokenPipe)
    }

    /// Lets `f` take bytes from a socket's receive buffer (the socket
    /// server writes them straight to its client); `f` returns how many it
    /// took. `Ok(None)` is end of stream (the peer's FIN, all data taken).
    pub(crate) fn tcp_recv_with(
        &mut self,
        id: SocketId,
        f: impl FnOnce(&[u8]) -> usize,
    ) -> Result<Option<usize>, SockError> {
        let (t, s) = self.tcp_mut(id)?;
        if s.can_recv() {
            return s
                .recv(|buf| {
                    let n = f(buf).min(buf.len());
                    (n, n)
                })
                .map(Some)
                .map_err(|_| SockError::NotConnected);
        }
        if let Some(e) = t.error {
            return Err(e);
        }
        if s.may_recv() || matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived) {
            return Ok(Some(0));
        }
        Ok(None)
    }

    /// Whether a connected socket has received bytes not yet taken, and
    /// whether all it was given to send has been acknowledged.
    pub(crate) fn tcp_pending(&mut self, id: SocketId) -> Result<(bool, bool), SockError> {
        let (_, s) = self.tcp_mut(id)?;
        Ok((s.can_recv(), s.send_queue() == 0))
    }

    /// Whether a TCP socket may bind `local` (what `bind(2)` checks before
    /// `listen` or `connect` take the port).
    pub(crate) fn tcp_bind_check(&self, local: SocketAddr, reuse: bool) -> Result<(), SockError> {
        if local.port() != 0
            && self
                .ports
                .conflicts(Proto::Tcp, local.port(), listen_addr(local.ip()), reuse)
        {
            return Err(SockError::AddrInUse);
        }
        Ok(())
    }

    /// Shuts the sending side (`shutdown(SHUT_WR)`): a FIN follows the data
    /// already queued; receiving goes on.
    pub(crate) fn tcp_shutdown(&mut self, id: SocketId) -> Result<(), SockError> {
        let (_, s) = self.tcp_mut(id)?;
        s.close();
        Ok(())
    }

    /// `TCP_NODELAY` (Nagle's algorithm off) and `SO_KEEPALIVE` (with
    /// `interval`) on a connected socket.
    pub(crate) fn tcp_set_opts(
        &mut self,
        id: SocketId,
        nodelay: bool,
        keepalive: Option<Duration>,
    ) -> Result<(), SockError> {
        let (_, s) = self.tcp_mut(id)?;
        s.set_nagle_enabled(!nodelay);
        s.set_keep_alive(keepalive);
        Ok(())
    }

    pub(crate) fn tcp_state(&mut self, id: SocketId) -> Result<TcpState, SockError> {
        if let Kind::Listener { .. } = self.entry(id)?.kind {
            return Ok(TcpState::Listening);
        }
        let (t, s) = self.tcp_mut(id)?;
        Ok(match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived if t.connecting => TcpState::Connecting,
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen => TcpState::Closed,
            _ => TcpState::Connected,
        })
    }

    pub(crate) fn close(&mut self, id: SocketId, abort: bool) -> Result<(), SockError> {
        let e = entry(&mut self.socks, id)?;
        match &mut e.kind {
            Kind::Tcp(t) => {
                if abort {
                    t.user_aborted = true;
                }
                t.closed_at = Some(self.now);
                e.closed = true;
                let s = self.sockets.get_mut::<tcp::Socket>(t.h);
                if abort {
                    s.abort();
                } else {
                    s.close();
                }
                // Freed by the next poll, once its FIN or RST is out.
            }
            Kind::Listener { pool, .. } => {
                for h in pool.iter() {
                    self.sockets.get_mut::<tcp::Socket>(*h).abort();
                }
                e.closed = true;
                // Pending connections are reset as a closed listener does;
                // the pool is freed once the resets are out.
                let pool = std::mem::take(pool);
                let port = match e.kind {
                    Kind::Listener { port, .. } => port,
                    _ => unreachable!(),
                };
                self.ports.release(Proto::Tcp, port, id);
                self.socks.map.remove(&id);
                for h in pool {
                    self.orphan(h);
                }
            }
            // Datagrams a program sent just before closing are on their
            // way (as the kernel's are once sendto returned): the socket
            // lingers until the next poll has sent them.
            Kind::Udp { h, linger, .. }
                if !abort && self.sockets.get::<udp::Socket>(*h).send_queue() > 0 =>
            {
                *linger = Some(self.now + UDP_LINGER);
                e.closed = true;
            }
            _ => self.free(id),
        }
        Ok(())
    }

    /// Keeps an aborted socket until its reset has gone out, under a hidden
    /// id, then frees it.
    fn orphan(&mut self, h: SocketHandle) {
        self.socks.next = self.socks.next.wrapping_add(1);
        let id = SocketId(self.socks.next | 0x8000_0000);
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Tcp(TcpTrack {
                    h,
                    own_port: None,
                    connecting: false,
                    started: self.now,
                    last: tcp::State::Closed,
                    error: None,
                    user_aborted: true,
                    closed_at: Some(self.now),
                }),
                closed: true,
            },
        );
    }

    pub(crate) fn take_error(&mut self, id: SocketId) -> Result<Option<SockError>, SockError> {
        match self.tcp_mut(id) {
            Ok((t, _)) => Ok(t.error.take()),
            Err(_) => self.entry(id).map(|_| None),
        }
    }

    pub(crate) fn local_addr(&mut self, id: SocketId) -> Result<SocketAddr, SockError> {
        let e = entry(&mut self.socks, id)?;
        let any = |a: Option<IpAddress>, port| {
            SocketAddr::new(a.map_or(IpAddr::from([0u8, 0, 0, 0]), IpAddr::from), port)
        };
        match &e.kind {
            Kind::Listener { port, addr, .. } => Ok(any(*addr, *port)),
            Kind::Tcp(t) => self
                .sockets
                .get::<tcp::Socket>(t.h)
                .local_endpoint()
                .map(to_std)
                .ok_or(SockError::NotConnected),
            Kind::Udp { h, port, .. } => {
                let ep = self.sockets.get::<udp::Socket>(*h).endpoint();
                Ok(any(ep.addr, *port))
            }
            _ => Err(SockError::InvalidInput),
        }
    }

    pub(crate) fn peer_addr(&mut self, id: SocketId) -> Result<SocketAddr, SockError> {
        let (_, s) = self.tcp_mut(id)?;
        s.remote_endpoint()
            .map(to_std)
            .ok_or(SockError::NotConnected)
    }

    pub(crate) fn udp_bind(
        &mut self,
        local: SocketAddr,
        reuse: bool,
    ) -> Result<SocketId, SockError> {
        let (id, addr, port) = self.bind_port(Proto::Udp, local, reuse)?;
        let charge = match self.charge_mem(self.tunables.udp_recvspace + UDP_SENDSPACE) {
            Ok(c) => c,
            Err(e) => {
                self.ports.release(Proto::Udp, port, id);
                return Err(e);
            }
        };
        let n = (self.tunables.udp_recvspace / 512).max(4);
        let rx = udp::PacketBuffer::new(
            vec![PacketMetadata::EMPTY; n],
            vec![0u8; self.tunables.udp_recvspace],
        );
        let tx = udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; 64], vec![0u8; UDP_SENDSPACE]);
        let mut s = udp::Socket::new(rx, tx);
        s.set_hop_limit(Some(self.tunables.ip_ttl));
        if s.bind(IpListenEndpoint { addr, port }).is_err() {
            self.ports.release(Proto::Udp, port, id);
            return Err(SockError::InvalidInput);
        }
        let h = self.hold(s, charge);
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Udp {
                    h,
                    port,
                    linger: None,
                },
                closed: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn udp_send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        dst: SocketAddr,
    ) -> Result<usize, SockError> {
        let dst_ip = to_ip(dst.ip());
        let Kind::Udp { h, .. } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        if data.len() > 65507 {
            return Err(SockError::MsgSize);
        }
        let bound = self.sockets.get::<udp::Socket>(h).endpoint().addr;
        let src = match bound {
            Some(a) if same_family(a, dst_ip) => a,
            // A socket bound to one family cannot reach the other.
            Some(_) => return Err(SockError::InvalidInput),
            None => self.pick_source(dst_ip)?,
        };
        if dst.port() == 0 || dst_ip.is_unspecified() {
            return Err(SockError::InvalidInput);
        }
        let meta = udp::UdpMetadata {
            endpoint: IpEndpoint::new(dst_ip, dst.port()),
            local_address: Some(src),
            meta: Default::default(),
        };
        match self
            .sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(data, meta)
        {
            Ok(()) => {
                self.stats.udp_out += 1;
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(SockError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(SockError::InvalidInput),
        }
    }

    pub(crate) fn udp_recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), SockError> {
        let Kind::Udp { h, .. } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        match self.sockets.get_mut::<udp::Socket>(h).recv_slice(buf) {
            Ok((n, meta)) => {
                self.stats.udp_in += 1;
                Ok((n, to_std(meta.endpoint)))
            }
            Err(udp::RecvError::Exhausted) => Err(SockError::WouldBlock),
            Err(udp::RecvError::Truncated) => Err(SockError::MsgSize),
        }
    }

    pub(crate) fn icmp_open(&mut self, ident: u16) -> Result<SocketId, SockError> {
        let id = self.alloc_id()?;
        let charge = self.charge_mem(2 * 16 * 1024)?;
        let rx =
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0u8; 16 * 1024]);
        let tx =
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0u8; 16 * 1024]);
        let mut s = icmp::Socket::new(rx, tx);
        s.set_hop_limit(Some(self.tunables.ip_ttl));
        s.bind(icmp::Endpoint::Ident(ident))
            .map_err(|_| SockError::InvalidInput)?;
        let h = self.hold(s, charge);
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Icmp { h },
                closed: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn icmp_send(
        &mut self,
        id: SocketId,
        msg: &[u8],
        dst: IpAddr,
    ) -> Result<(), SockError> {
        let Kind::Icmp { h } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        self.sockets
            .get_mut::<icmp::Socket>(h)
            .send_slice(msg, to_ip(dst))
            .map_err(|e| match e {
                icmp::SendError::BufferFull => SockError::WouldBlock,
                icmp::SendError::Unaddressable => SockError::InvalidInput,
            })
    }

    pub(crate) fn icmp_recv(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, IpAddr), SockError> {
        let Kind::Icmp { h } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        match self.sockets.get_mut::<icmp::Socket>(h).recv_slice(buf) {
            Ok((n, from)) => Ok((n, IpAddr::from(from))),
            Err(icmp::RecvError::Exhausted) => Err(SockError::WouldBlock),
            Err(icmp::RecvError::Truncated) => Err(SockError::MsgSize),
        }
    }

    fn raw_open(&mut self, v6: bool, proto: u8) -> Result<SocketId, SockError> {
        let id = self.alloc_id()?;
        let charge = self.charge_mem(2 * 64 * 1024)?;
        let rx = raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 16], vec![0u8; 64 * 1024]);
        let tx = raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 16], vec![0u8; 64 * 1024]);
        let version = if v6 { IpVersion::Ipv6 } else { IpVersion::Ipv4 };
        let s = raw::Socket::new(Some(version), Some(IpProtocol::from(proto)), rx, tx);
        let h = self.hold(s, charge);
        self.socks.map.insert(
            id,
            Entry {
                kind: Kind::Raw { h },
                closed: false,
            },
        );
        Ok(id)
    }

    fn raw_send(&mut self, id: SocketId, packet: &[u8]) -> Result<(), SockError> {
        let Kind::Raw { h } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        self.sockets
            .get_mut::<raw::Socket>(h)
            .send_slice(packet)
            .map_err(|_| SockError::WouldBlock)
    }

    fn raw_recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, SockError> {
        let Kind::Raw { h } = self.entry(id)?.kind else {
            return Err(SockError::InvalidInput);
        };
        self.sockets
            .get_mut::<raw::Socket>(h)
            .recv_slice(buf)
            .map_err(|e| match e {
                raw::RecvError::Exhausted => SockError::WouldBlock,
                raw::RecvError::Truncated => SockError::MsgSize,
            })
    }

    /// Number of sockets the program holds in this vnet.
    pub fn socket_count(&self) -> usize {
        self.socks.map.values().filter(|e| !e.closed).count()
    }

    /// Every socket a program holds, as `netstat` shows them.
    pub fn socket_list(&self) -> Vec<SocketInfo> {
        let any = |a: Option<IpAddress>, port| {
            SocketAddr::new(a.map_or(IpAddr::from([0u8, 0, 0, 0]), IpAddr::from), port)
        };
        let mut out = Vec::new();
        for (id, e) in self.socks.map.iter().filter(|(_, e)| !e.closed) {
            let (proto, state, local, peer) = match &e.kind {
                Kind::Listener { port, addr, .. } => {
                    ("tcp", "LISTEN".to_string(), any(*addr, *port), None)
                }
                Kind::Tcp(t) => {
                    let s = self.sockets.get::<tcp::Socket>(t.h);
                    (
                        "tcp",
                        format!("{}", s.state()).to_uppercase().replace('-', "_"),
                        s.local_endpoint().map_or(any(None, 0), to_std),
                        s.remote_endpoint().map(to_std),
                    )
                }
                Kind::Udp { h, port, .. } => {
                    let s = self.sockets.get::<udp::Socket>(*h);
                    ("udp", String::new(), any(s.endpoint().addr, *port), None)
                }
                Kind::Icmp { .. } => ("icmp", String::new(), any(None, 0), None),
                Kind::Raw { .. } => ("raw", String::new(), any(None, 0), None),
            };
            out.push(SocketInfo {
                id: *id,
                proto,
                state,
                local,
                peer,
            });
        }
        out
    }

    /// Number of smoltcp sockets alive (held, pending accept, or finishing).
    pub fn engine_socket_count(&self) -> usize {
        self.sockets.iter().count()
    }
}

fn on<R>(f: impl FnOnce(&mut Inet) -> Result<R, SockError>) -> Result<R, SockError> {
    vnet::with::<Inet, _>(f)?
}

/// Listens for TCP on `local` (port 0 picks one) with room for `backlog`
/// connections waiting to be accepted.
///
/// # Errors
/// `AddrInUse`, `AddrNotAvailable` (not our address), `NoBufs`.
pub fn tcp_listen(
    local: SocketAddr,
    backlog: usize,
    reuse_addr: bool,
) -> Result<SocketId, SockError> {
    on(|i| i.tcp_listen(local, backlog, reuse_addr))
}

/// Takes one established connection from a listener.
///
/// # Errors
/// `WouldBlock` when none is ready.
pub fn tcp_accept(listener: SocketId) -> Result<(SocketId, SocketAddr), SockError> {
    on(|i| i.tcp_accept(listener))
}

/// Starts connecting to `remote` (from `local`, or a source chosen by the
/// route and an ephemeral port). Completion shows in [`tcp_state`]; a
/// failure in [`take_error`] (as `SO_ERROR`).
///
/// # Errors
/// `NetUnreachable` with no route, `AddrInUse`, `InvalidInput`, `NoBufs`.
pub fn tcp_connect(remote: SocketAddr, local: Option<SocketAddr>) -> Result<SocketId, SockError> {
    on(|i| i.tcp_connect(remote, local, false))
}

/// Where a TCP socket stands.
///
/// # Errors
/// `BadSocket`.
pub fn tcp_state(id: SocketId) -> Result<TcpState, SockError> {
    on(|i| i.tcp_state(id))
}

/// Queues bytes on a connected TCP socket; returns how many were taken.
///
/// # Errors
/// `WouldBlock` when the buffer is full or still connecting, `BrokenPipe`
/// after shutdown, the connection's error after a reset or refusal.
pub fn send(id: SocketId, data: &[u8]) -> Result<usize, SockError> {
    on(|i| i.sock_send(id, data))
}

/// Reads bytes from a TCP socket; `Ok(0)` is end of stream.
///
/// # Errors
/// `WouldBlock` when nothing is there yet, the connection's error.
pub fn recv(id: SocketId, buf: &mut [u8]) -> Result<usize, SockError> {
    on(|i| i.sock_recv(id, buf))
}

/// Closes a socket: TCP sends FIN and finishes in the background.
///
/// # Errors
/// `BadSocket`.
pub fn close(id: SocketId) -> Result<(), SockError> {
    on(|i| i.close(id, false))
}

/// Closes a TCP socket with a reset.
///
/// # Errors
/// `BadSocket`.
pub fn abort(id: SocketId) -> Result<(), SockError> {
    on(|i| i.close(id, true))
}

/// Takes the pending error of a socket (`SO_ERROR`).
///
/// # Errors
/// `BadSocket`.
pub fn take_error(id: SocketId) -> Result<Option<SockError>, SockError> {
    on(|i| i.take_error(id))
}

/// The local address of a socket.
///
/// # Errors
/// `BadSocket`, `NotConnected`.
pub fn local_addr(id: SocketId) -> Result<SocketAddr, SockError> {
    on(|i| i.local_addr(id))
}

/// The peer of a connected TCP socket.
///
/// # Errors
/// `BadSocket`, `NotConnected`.
pub fn peer_addr(id: SocketId) -> Result<SocketAddr, SockError> {
    on(|i| i.peer_addr(id))
}

/// Binds a UDP socket (port 0 picks one).
///
/// # Errors
/// `AddrInUse`, `AddrNotAvailable`, `NoBufs`.
pub fn udp_bind(local: SocketAddr, reuse_addr: bool) -> Result<SocketId, SockError> {
    on(|i| i.udp_bind(local, reuse_addr))
}

/// Sends one datagram.
///
/// # Errors
/// `WouldBlock` when the send buffer is full, `NetUnreachable`, `MsgSize`.
pub fn udp_send_to(id: SocketId, data: &[u8], dst: SocketAddr) -> Result<usize, SockError> {
    on(|i| i.udp_send_to(id, data, dst))
}

/// Receives one datagram.
///
/// # Errors
/// `WouldBlock` when none is queued, `MsgSize` if `buf` is too small.
pub fn udp_recv_from(id: SocketId, buf: &mut [u8]) -> Result<(usize, SocketAddr), SockError> {
    on(|i| i.udp_recv_from(id, buf))
}

/// Opens an ICMP echo socket with identifier `ident` (a ping socket).
///
/// # Errors
/// `NoBufs`, `InvalidInput`.
pub fn icmp_open(ident: u16) -> Result<SocketId, SockError> {
    on(|i| i.icmp_open(ident))
}

/// Sends an ICMP (or ICMPv6) message; its checksum is filled in.
///
/// # Errors
/// `WouldBlock`, `InvalidInput`.
pub fn icmp_send(id: SocketId, msg: &[u8], dst: IpAddr) -> Result<(), SockError> {
    on(|i| i.icmp_send(id, msg, dst))
}

/// Receives an ICMP message for this socket's identifier.
///
/// # Errors
/// `WouldBlock`, `MsgSize`.
pub fn icmp_recv(id: SocketId, buf: &mut [u8]) -> Result<(usize, IpAddr), SockError> {
    on(|i| i.icmp_recv(id, buf))
}

/// Opens a raw IP socket for one protocol number (IPv4 or IPv6): it sees a
/// copy of every packet of that protocol and sends whole IP packets.
///
/// # Errors
/// `NoBufs`.
pub fn raw_open(v6: bool, protocol: u8) -> Result<SocketId, SockError> {
    on(|i| i.raw_open(v6, protocol))
}

/// Sends a whole IP packet from a raw socket.
///
/// # Errors
/// `WouldBlock`, `InvalidInput`.
pub fn raw_send(id: SocketId, packet: &[u8]) -> Result<(), SockError> {
    on(|i| i.raw_send(id, packet))
}

/// Receives a whole IP packet on a raw socket.
///
/// # Errors
/// `WouldBlock`, `MsgSize`.
pub fn raw_recv(id: SocketId, buf: &mut [u8]) -> Result<usize, SockError> {
    on(|i| i.raw_recv(id, buf))
}

/// Every socket a program holds in the current vnet.
///
/// # Errors
/// No current vnet.
pub fn list() -> Result<Vec<SocketInfo>, SockError> {
    on(|i| Ok(i.socket_list()))
}

/// Sockets held in the current vnet.
///
/// # Errors
/// No current vnet.
pub fn count() -> Result<usize, SockError> {
    on(|i| Ok(i.socket_count()))
}
