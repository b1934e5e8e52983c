//! The socket server's sockets of one vnet (a per-vnet subsystem, like the
//! stack's own socket table) and the pump that moves data between each
//! client's socket pair and the stack, run by the vnet's worker after every
//! poll.
//!
//! A record is keyed by the inode of the client's end of its pair, which is
//! how a request naming a descriptor finds it. The pump touches only the
//! sockets whose descriptors were reported ready, plus those with data
//! waiting in the stack; an idle socket costs nothing per poll.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use smoltcp::time::{Duration, Instant};

use super::server::Namer;
use super::wire::{self, ADDR_LEN, Kind};
use crate::driver::realtime::RtHandle;
use crate::stack::Inet;
use crate::stack::socket::{SockError, SocketId, TcpState};
use crate::vnet::limits::{Account, Charge, Resource};
use crate::vnet::{InitCx, PerVnet, SysInitOrder, TeardownCx, VnetVars};

/// Options kept per socket.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Opts {
    pub reuse_addr: bool,
    pub reuse_port: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub v6only: bool,
}

/// Where a socket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum St {
    /// TCP, neither listening nor connected yet.
    Fresh,
    /// TCP, connect in progress.
    Connecting(SocketId),
    /// TCP, connected (data flows).
    Connected(SocketId),
    /// TCP, listening.
    Listening(SocketId),
    /// TCP, connection failed or ended with a reset; the error is in `err`.
    Failed,
    /// UDP, bound once it has a stack socket.
    Udp(Option<SocketId>),
}

/// An accepted connection waiting for room on its listener's channel: the
/// record, the client's end, its inode, and the server's record.
type HeldAccept = ([u8; ADDR_LEN], OwnedFd, u64, Sock);

/// One client socket.
pub(crate) struct Sock {
    /// The server's end of the pair.
    pub fd: OwnedFd,
    pub cookie: u64,
    /// The abstract name of the client's end.
    name: String,
    pub kind: Kind,
    pub v6: bool,
    pub st: St,
    /// The address given to `bind`, before `listen` or `connect` use it.
    pub bound: Option<SocketAddr>,
    pub opts: Opts,
    /// The pending `SO_ERROR`.
    pub err: Option<i32>,
    /// Requests waiting for a connect to finish.
    pub waiters: Vec<Sender<()>>,
    /// The connected peer of a UDP socket.
    pub peer: Option<SocketAddr>,
    /// The echo identifier of a ping socket.
    pub ident: u16,
    /// The epoll token of `fd`.
    token: u32,
    /// The client may have sent something (set on readiness, cleared when a
    /// read finds nothing).
    rd_ready: bool,
    /// The client's buffer was full (cleared on readiness).
    wr_blocked: bool,
    /// The client shut its sending side: a FIN went out.
    client_eof: bool,
    /// The peer's FIN was passed on to the client.
    fin_passed: bool,
    /// A datagram from the client the stack had no room for.
    held_dgram: Option<(Vec<u8>, SocketAddr)>,
    /// An accepted connection the client's listening channel had no room
    /// for: the record to send and the new socket's ends.
    held_accept: Option<Box<HeldAccept>>,
    /// To be removed after this pass.
    dead: bool,
    /// Its place in the vnet's socket quota.
    pub quota: Option<Charge>,
}

impl Sock {
    /// A new record for a server end.
    pub fn new(fd: OwnedFd, name: &wire::SockName, token: u32) -> Sock {
        let (cookie, kind, v6) = (name.cookie, name.kind, name.v6);
        Sock {
            fd,
            cookie,
            name: name.encode(),
            kind,
            v6,
            st: if kind == Kind::Tcp {
                St::Fresh
            } else {
                St::Udp(None)
            },
            bound: None,
            opts: Opts::default(),
            err: None,
            waiters: Vec::new(),
            peer: None,
            // Distinct per socket until 65,535 of them (0 is avoided).
            ident: (cookie % 0xffff) as u16 + 1,
            token,
            rd_ready: true,
            wr_blocked: false,
            client_eof: false,
            fin_passed: false,
            held_dgram: None,
            held_accept: None,
            dead: false,
            quota: None,
        }
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// The unspecified address of the socket's family.
    pub fn any(&self) -> SocketAddr {
        if self.v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        }
    }
}

/// The socket server's sockets of one vnet.
#[derive(Default)]
pub struct Sockets {
    pub(crate) map: HashMap<u64, Sock>,
    /// Epoll token to record key.
    tokens: HashMap<u32, u64>,
    next_token: u32,
    vnet: u32,
    /// The vnet's name (for `Info`).
    pub(crate) vnet_name: String,
    /// A datagram's worth of room for the pump, made the first time a
    /// datagram socket needs it.
    scratch: Vec<u8>,
    /// The vnet's account, which every record is charged to.
    pub(crate) account: Option<Arc<Account>>,
}

impl PerVnet for Sockets {
    const NAME: &'static str = "sockets";
    const ORDER: SysInitOrder = SysInitOrder::LATE;
    fn init(cx: &mut InitCx<'_>) -> Self {
        Sockets {
            vnet: cx.id.0,
            vnet_name: cx.name.to_string(),
            account: Some(Arc::clone(cx.account)),
            ..Sockets::default()
        }
    }
    fn uninit(&mut self, _rest: &mut VnetVars, _cx: &mut TeardownCx) {
        // Closing the server ends tells every client its socket is gone;
        // the stack resets the connections when it is torn down next.
        for (_, mut s) in self.map.drain() {
            s.wake_waiters();
        }
    }
}

impl Sockets {
    /// Adds a record keyed by `ino` and watches its descriptor.
    pub(crate) fn insert(&mut self, rt: &RtHandle, ino: u64, mut s: Sock) -> std::io::Result<()> {
        let token = self.alloc_token();
        s.token = token;
        rt.watch(crate::vnet::VnetId(self.vnet), s.fd.as_raw_fd(), token)?;
        self.tokens.insert(token, ino);
        self.map.insert(ino, s);
        Ok(())
    }

    /// Removes a record (the stack socket must be dealt with by the caller).
    pub(crate) fn remove(&mut self, ino: u64) -> Option<Sock> {
        let s = self.map.remove(&ino)?;
        self.tokens.remove(&s.token);
        Some(s)
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            self.next_token = self.next_token.wrapping_add(1);
            if !self.tokens.contains_key(&self.next_token) {
                return self.next_token;
            }
        }
    }

    /// How many sockets the server holds in this vnet.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// How long a TCP keepalive probe waits (`SO_KEEPALIVE`; Linux's default
/// idle time is two hours, which no test or user waits for).
const KEEPALIVE: Duration = Duration::from_secs(75);

impl Sock {
    /// Whether the client has closed its end altogether (not just shut down
    /// its sending side). Once both directions are shut (or the server shut
    /// them on a failure), the server's end reports a hang-up either way; then the client's end is alive as long
    /// as its name is bound.
    fn hung_up(&self) -> bool {
        if (self.fin_passed && self.client_eof) || self.st == St::Failed {
            return !wire::name_bound(&self.name);
        }
        pollhup(self.fd.as_raw_fd())
    }
}

fn pollhup(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Moves data for the sockets of the current vnet; the I/O hook of the
/// real-time driver. Returns when it wants to run again.
pub(crate) fn service(
    namer: &Namer,
    rt: &RtHandle,
    now: Instant,
    ready: &[u32],
) -> Option<Instant> {
    crate::vnet::with_vars(|vars| {
        let (socks, inet) = vars.get2_mut::<Sockets, Inet>()?;
        if socks.map.is_empty() {
            return None;
        }
        for t in ready {
            if let Some(s) = socks.tokens.get(t).and_then(|k| socks.map.get_mut(k)) {
                s.rd_ready = true;
                s.wr_blocked = false;
            }
        }
        let mut again = None;
        let mut born: Vec<(u64, Sock)> = Vec::new();
        let mut mk = Maker {
            namer,
            vnet: socks.vnet,
            buf: std::mem::take(&mut socks.scratch),
            account: socks.account.clone(),
        };
        for s in socks.map.values_mut() {
            if pump(s, inet, &mut mk, &mut born) {
                again = Some(now + Duration::from_millis(1));
            }
        }
        socks.scratch = std::mem::take(&mut mk.buf);
        for (ino, s) in born {
            if let Err(e) = socks.insert(rt, ino, s) {
                log::warn!("sockets: watching an accepted connection: {e}");
            }
        }
        let dead: Vec<u64> = socks
            .map
            .iter()
            .filter(|(_, s)| s.dead)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            socks.remove(k);
        }
        again
    })
    .ok()
    .flatten()
}

/// Moves what can be moved for one socket; returns whether it holds
/// something back that a later pass must retry without a wake-up.
fn pump(s: &mut Sock, inet: &mut Inet, mk: &mut Maker<'_>, born: &mut Vec<(u64, Sock)>) -> bool {
    match s.st {
        St::Fresh | St::Failed => {
            if s.rd_ready && s.hung_up() {
                s.dead = true;
            }
            s.rd_ready = false;
            false
        }
        St::Connecting(id) => {
            match inet.tcp_state(id) {
                Ok(TcpState::Connecting) => {
                    if s.rd_ready && s.hung_up() {
                        let _ = inet.close(id, true);
                        s.dead = true;
                    }
                    s.rd_ready = false;
                    return false;
                }
                Ok(TcpState::Connected) => {
                    s.st = St::Connected(id);
                    let ka = s.opts.keepalive.then_some(KEEPALIVE);
                    let _ = inet.tcp_set_opts(id, s.opts.nodelay, ka);
                    s.rd_ready = true;
                    s.wake_waiters();
                }
                _ => {
                    let e = inet
                        .take_error(id)
                        .ok()
                        .flatten()
                        .unwrap_or(SockError::ConnRefused);
                    let _ = inet.close(id, true);
                    fail(s, e.errno());
                    s.wake_waiters();
                    return false;
                }
            }
            pump(s, inet, mk, born)
        }
        St::Connected(id) => pump_tcp(s, id, inet),
        St::Listening(id) => pump_listener(s, id, inet, mk, born),
        St::Udp(_) => pump_udp(s, inet, &mut mk.buf),
    }
}

/// A connection that failed or was reset: closed in the stack, the pair
/// shut with the error kept for `SO_ERROR`.
fn reset(s: &mut Sock, id: SocketId, inet: &mut Inet, e: SockError) -> bool {
    let _ = inet.close(id, true);
    fail(s, e.errno());
    false
}

/// Ends a TCP socket's data flow with `errno` (kept for `SO_ERROR`); the
/// client sees end of stream.
fn fail(s: &mut Sock, errno: i32) {
    s.err = Some(errno);
    s.st = St::Failed;
    // SAFETY: shutdown(2) on the server end this record owns.
    unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_RDWR) };
}

fn pump_tcp(s: &mut Sock, id: SocketId, inet: &mut Inet) -> bool {
    let fd = s.fd.as_raw_fd();
    // Client to stack, straight into the send buffer.
    while s.rd_ready && !s.client_eof {
        let mut res: isize = 0;
        let mut full = false;
        let r = inet.tcp_send_with(id, |buf| {
            if buf.is_empty() {
                full = true;
                return 0;
            }
            // SAFETY: reads into `buf`, valid for its length.
            res = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            res.max(0) as usize
        });
        match r {
            Err(e) => return reset(s, id, inet, e),
            Ok(_) if full => break,
            Ok(_) if res > 0 => continue,
            Ok(_) if res == 0 => {
                // The client shut its side: FIN after the queued data, or
                // close altogether when it has gone.
                s.client_eof = true;
                if s.hung_up() {
                    return close_tcp(s, id, inet);
                }
                let _ = inet.tcp_shutdown(id);
            }
            Ok(_) => {
                match errno() {
                    libc::EAGAIN => s.rd_ready = false,
                    libc::EINTR => continue,
                    // The client closed with data it never read (the
                    // kernel reports that as a reset): so does TCP.
                    libc::ECONNRESET => {
                        let _ = inet.close(id, true);
                        s.dead = true;
                        return false;
                    }
                    _ => return close_tcp(s, id, inet),
                }
                break;
            }
        }
    }
    // Stack to client, straight from the receive buffer.
    while !s.wr_blocked {
        let mut res: isize = 0;
        let r = inet.tcp_recv_with(id, |buf| {
            // SAFETY: writes from `buf`, valid for its length.
            res = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            res.max(0) as usize
        });
        match r {
            Err(e) => return reset(s, id, inet, e),
            Ok(None) => {
                if !s.fin_passed {
                    s.fin_passed = true;
                    // SAFETY: shutdown(2) on the server end this record owns.
                    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                }
                break;
            }
            Ok(Some(0)) if res == 0 => break,
            Ok(Some(_)) if res > 0 => continue,
            Ok(Some(_)) => {
                match errno() {
                    libc::EAGAIN => s.wr_blocked = true,
                    libc::EINTR => continue,
                    // EPIPE: the client is gone with data unread.
                    _ => {
                        let _ = inet.close(id, true);
                        s.dead = true;
                        return false;
                    }
                }
                break;
            }
        }
    }
    if s.client_eof && s.rd_ready && s.hung_up() {
        return close_tcp(s, id, inet);
    }
    false
}

/// The client closed its socket: FIN as the kernel would, or RST if data
/// it never read is waiting (as Linux does).
fn close_tcp(s: &mut Sock, id: SocketId, inet: &mut Inet) -> bool {
    let unread = inet.tcp_pending(id).map(|(r, _)| r).unwrap_or(false);
    let _ = inet.close(id, unread);
    s.dead = true;
    false
}

/// What the pump needs beyond the socket: a way to make sockets for
/// accepted connections, and the vnet's buffer for datagrams.
struct Maker<'a> {
    namer: &'a Namer,
    vnet: u32,
    buf: Vec<u8>,
    account: Option<Arc<Account>>,
}

fn pump_listener(
    s: &mut Sock,
    id: SocketId,
    inet: &mut Inet,
    mk: &Maker<'_>,
    born: &mut Vec<(u64, Sock)>,
) -> bool {
    let fd = s.fd.as_raw_fd();
    if s.rd_ready {
        s.rd_ready = false;
        if s.hung_up() {
            let _ = inet.close(id, false);
            s.dead = true;
            return false;
        }
    }
    loop {
        if let Some(held) = s.held_accept.take() {
            let (rec, cli, ino, sock) = *held;
            match wire::send_with_fds(fd, &rec, &[cli.as_raw_fd()], libc::MSG_DONTWAIT) {
                Ok(_) => born.push((ino, sock)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    s.held_accept = Some(Box::new((rec, cli, ino, sock)));
                    return true;
                }
                Err(_) => {
                    // The client is gone: the connection goes with it.
                    if let St::Connected(cid) = sock.st {
                        let _ = inet.close(cid, true);
                    }
                    let _ = inet.close(id, false);
                    s.dead = true;
                    return false;
                }
            }
        }
        let (cid, peer) = match inet.tcp_accept(id) {
            Ok(x) => x,
            Err(_) => return false,
        };
        // An accepted connection is a socket of the vnet's too: over the
        // quota, it is reset (the peer sees the refusal at once).
        let quota = match mk.account.as_ref().map(|a| a.charge(Resource::Sockets, 1)) {
            Some(Err(e)) => {
                log::info!("sockets: connection from {peer} reset: {e}");
                let _ = inet.close(cid, true);
                continue;
            }
            Some(Ok(c)) => Some(c),
            None => None,
        };
        let made = wire::pair(libc::SOCK_STREAM).and_then(|(srv, cli)| {
            let name = mk.namer.name(&cli, mk.vnet, Kind::Tcp, s.v6)?;
            let ino = wire::inode(cli.as_raw_fd()).ok_or_else(std::io::Error::last_os_error)?;
            let mut n = Sock::new(srv, &name, 0);
            n.st = St::Connected(cid);
            n.opts = s.opts;
            n.quota = quota;
            Ok((cli, ino, n))
        });
        match made {
            Ok((cli, ino, n)) => {
                let ka = n.opts.keepalive.then_some(KEEPALIVE);
                let _ = inet.tcp_set_opts(cid, n.opts.nodelay, ka);
                let peer = if s.v6 { to_v6(peer) } else { peer };
                s.held_accept = Some(Box::new((wire::encode_addr(Some(peer)), cli, ino, n)));
            }
            Err(e) => {
                log::warn!("sockets: no descriptors for an accepted connection: {e}");
                let _ = inet.close(cid, true);
                return false;
            }
        }
    }
}

/// An IPv4 address as an IPv6 socket reports it (`::ffff:a.b.c.d`).
pub(crate) fn to_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

fn pump_udp(s: &mut Sock, inet: &mut Inet, buf: &mut Vec<u8>) -> bool {
    let fd = s.fd.as_raw_fd();
    if buf.is_empty() {
        buf.resize(ADDR_LEN + 65536, 0);
    }
    // Client to stack.
    loop {
        if let Some((data, dst)) = s.held_dgram.take() {
            match udp_out(s, inet, &data, dst) {
                Err(SockError::WouldBlock) => {
                    s.held_dgram = Some((data, dst));
                    return true;
                }
                Err(e) => s.err = Some(e.errno()),
                Ok(()) => {}
            }
        }
        if !s.rd_ready {
            break;
        }
        // SAFETY: reads into `buf`, valid for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => s.rd_ready = false,
                _ => s.dead = true,
            }
            break;
        }
        if n == 0 {
            // Only the end of the pair reads as empty: every datagram has an
            // address before it.
            s.dead = true;
            break;
        }
        let n = n as usize;
        let dst = match wire::decode_addr(&buf[..n]) {
            Ok(Some(a)) => a,
            Ok(None) => match s.peer {
                Some(p) => p,
                None => {
                    s.err = Some(libc::EDESTADDRREQ);
                    continue;
                }
            },
            Err(wire::BadAddr) => {
                s.err = Some(libc::EINVAL);
                continue;
            }
        };
        s.held_dgram = Some((buf[ADDR_LEN..n].to_vec(), dst));
    }
    // Stack to client.
    if let St::Udp(Some(id)) = s.st {
        loop {
            let got = if s.kind == Kind::Icmp {
                inet.icmp_recv(id, &mut buf[ADDR_LEN..])
                    .map(|(n, ip)| (n, SocketAddr::new(ip, 0)))
            } else {
                inet.udp_recv_from(id, &mut buf[ADDR_LEN..])
            };
            let (n, from) = match got {
                Ok(x) => x,
                Err(SockError::MsgSize) => continue,
                Err(_) => break,
            };
            let icmp = s.kind == Kind::Icmp;
            if s.peer.is_some_and(|p| {
                if icmp {
                    to_v6(p).ip() != to_v6(from).ip()
                } else {
                    p != from && to_v6(p) != to_v6(from)
                }
            }) {
                continue;
            }
            let from = if s.v6 { to_v6(from) } else { from };
            buf[..ADDR_LEN].copy_from_slice(&wire::encode_addr(Some(from)));
            // SAFETY: writes from `buf`, valid for the length given.
            let r = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    ADDR_LEN + n,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if r < 0 && errno() != libc::EAGAIN {
                s.dead = true;
                break;
            }
            // A full receive buffer drops the datagram, as the kernel does.
        }
    }
    if s.dead
        && let St::Udp(Some(id)) = s.st
    {
        let _ = inet.close(id, false);
    }
    false
}

/// Sends one datagram from a client, binding the socket first if it is
/// not yet (as `sendto` on an unbound socket does). A ping socket sends
/// only echo requests, with its own identifier (as Linux's do).
fn udp_out(s: &mut Sock, inet: &mut Inet, data: &[u8], dst: SocketAddr) -> Result<(), SockError> {
    let id = udp_bound(s, inet)?;
    if s.kind == Kind::Icmp {
        let request = if dst.is_ipv4() && dst.ip().to_canonical().is_ipv4() {
            8
        } else {
            128
        };
        if data.len() < 8 || data[0] != request || data[1] != 0 {
            return Err(SockError::InvalidInput);
        }
        let mut msg = data.to_vec();
        msg[4..6].copy_from_slice(&s.ident.to_be_bytes());
        return inet.icmp_send(id, &msg, dst.ip());
    }
    inet.udp_send_to(id, data, dst).map(|_| ())
}

/// The stack socket of a UDP record, bound to an ephemeral port if needed.
pub(crate) fn udp_bound(s: &mut Sock, inet: &mut Inet) -> Result<SocketId, SockError> {
    match s.st {
        St::Udp(Some(id)) => Ok(id),
        _ if s.kind == Kind::Icmp => {
            if let Some(p) = s.bound.map(|b| b.port()).filter(|p| *p != 0) {
                s.ident = p;
            }
            let id = inet.icmp_open(s.ident)?;
            s.st = St::Udp(Some(id));
            Ok(id)
        }
        _ => {
            let local = s.bound.unwrap_or_else(|| s.any());
            let id = inet.udp_bind(local, s.opts.reuse_addr || s.opts.reuse_port)?;
            s.st = St::Udp(Some(id));
            Ok(id)
        }
    }
}
