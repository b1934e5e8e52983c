//! What the socket server and its clients (the preload library, the Rust
//! client) say to each other, and the descriptor passing under it.
//!
//! A client process talks to the server over a `SOCK_SEQPACKET` session:
//! one JSON [`Req`] per packet, one JSON [`Reply`] back. A request about an
//! existing socket carries that socket's descriptor (`SCM_RIGHTS`): holding
//! the descriptor is the right to act on it, and the server recognises its
//! own sockets by the descriptor itself, so a socket keeps working across
//! `dup`, `fork` and `exec` with no state in the client.
//!
//! The data never goes through the session. A program's socket *is* one end
//! of a Unix socket pair whose other end the server holds:
//! - TCP: a stream pair carrying the connection's bytes as they are.
//! - A listening TCP socket: the same stream, over which the server sends one
//!   [`ADDR_LEN`]-byte record (the peer's address) per accepted connection,
//!   with the new connection's descriptor attached.
//! - UDP and ICMP echo: a `SOCK_SEQPACKET` pair; every datagram starts with
//!   an [`ADDR_LEN`]-byte address (the source on the way in, the
//!   destination or none on the way out).
//!
//! The client's end is bound to an abstract name ([`SockName`]) that tells
//! any process holding it that it is a vnet socket, of which vnet, kind and
//! family, with no request at all.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable naming the socket server's path.
pub const ENV_SOCKETS: &str = "VNET_SOCKETS";
/// Environment variable naming the vnet a program's sockets go to.
pub const ENV_VNET: &str = "VNET";

/// Where vnetd serves sockets, next to its control socket `ctl`.
pub fn sockets_path(ctl: &Path) -> PathBuf {
    let mut p = ctl.as_os_str().to_owned();
    p.push(".sockets");
    p.into()
}

/// The largest request or reply.
pub const MAX_MSG: usize = 64 * 1024;

/// A socket's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `SOCK_STREAM`.
    Tcp,
    /// `SOCK_DGRAM`.
    Udp,
    /// `SOCK_DGRAM` with `IPPROTO_ICMP`/`IPPROTO_ICMPV6`: a "ping socket"
    /// that sends echo requests and receives the replies to them.
    Icmp,
}

/// A socket option the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opt {
    /// `SO_REUSEADDR`.
    ReuseAddr,
    /// `SO_REUSEPORT`.
    ReusePort,
    /// `SO_KEEPALIVE`.
    KeepAlive,
    /// `TCP_NODELAY`.
    NoDelay,
    /// `IPV6_V6ONLY`.
    V6Only,
}

/// A request. All but [`Req::Socket`] and [`Req::Resolve`] are about the
/// socket whose descriptor comes with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Req {
    /// A new socket in `vnet`; the reply carries its descriptor.
    Socket {
        /// The vnet's name.
        vnet: String,
        /// `AF_INET6` rather than `AF_INET`.
        v6: bool,
        /// Stream or datagram.
        kind: Kind,
    },
    /// `bind(2)`.
    Bind {
        /// The local address (port 0 picks one).
        addr: SocketAddr,
    },
    /// `listen(2)`.
    Listen {
        /// Connections that may wait for `accept`.
        backlog: u32,
    },
    /// `connect(2)`; `wait` for the outcome (a blocking socket) rather than
    /// answering `EINPROGRESS`.
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// Block until connected or failed.
        wait: bool,
    },
    /// `SO_ERROR`: takes the pending error; with `wait`, first waits for a
    /// connection in progress to finish.
    Error {
        /// Wait for a connect in progress.
        wait: bool,
    },
    /// `getsockname(2)`.
    LocalAddr,
    /// `getpeername(2)`.
    PeerAddr,
    /// `setsockopt(2)` of an option the server keeps.
    SetOpt {
        /// Which.
        opt: Opt,
        /// Its value.
        val: i64,
    },
    /// `getsockopt(2)` of an option the server keeps.
    GetOpt {
        /// Which.
        opt: Opt,
    },
    /// Which vnet the socket is in and whether it listens.
    Info,
    /// Moves a socket not yet bound or connected to another vnet (the
    /// analogue of FreeBSD's `SO_SETFIB`); the reply carries the new
    /// descriptor (the vnet is part of the socket's name).
    Move {
        /// The vnet's name.
        vnet: String,
    },
    /// Looks a host name up in a vnet's hosts entries; when they do not
    /// have it, the reply has no addresses but the vnet's name servers and
    /// search domains, for the client to ask through the vnet.
    Resolve {
        /// The vnet's name.
        vnet: String,
        /// The name.
        name: String,
    },
}

/// A reply: `errno` 0 for success, and what the request asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// 0, or the errno of the failure.
    pub errno: i32,
    /// An address (`LocalAddr`, `PeerAddr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// Addresses (`Resolve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<IpAddr>,
    /// A value (`GetOpt`, `Error`).
    #[serde(default)]
    pub val: i64,
    /// The vnet (`Info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnet: Option<String>,
    /// The vnet's name servers (`Resolve`, when its hosts entries do not
    /// have the name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    /// The vnet's search domains (`Resolve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Whether the socket listens (`Info`).
    #[serde(default)]
    pub listening: bool,
    /// A message for a human when the errno alone says too little.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Reply {
    /// A failure.
    pub fn err(errno: i32) -> Reply {
        Reply {
            errno,
            ..Reply::default()
        }
    }
    /// A failure with an explanation.
    pub fn err_msg(errno: i32, message: impl Into<String>) -> Reply {
        Reply {
            errno,
            message: Some(message.into()),
            ..Reply::default()
        }
    }
}

/// The abstract name of a client's end:
/// `vnet.<server pid>.<vnet id>.<cookie>.<t|u|i><4|6>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockName {
    /// vnetd's pid.
    pub server: u32,
    /// The vnet's id.
    pub vnet: u32,
    /// Unique per socket.
    pub cookie: u64,
    /// Stream or datagram.
    pub kind: Kind,
    /// `AF_INET6`.
    pub v6: bool,
}

impl SockName {
    /// The name's bytes, without the leading NUL.
    pub fn encode(&self) -> String {
        let k = match self.kind {
            Kind::Tcp => 't',
            Kind::Udp => 'u',
            Kind::Icmp => 'i',
        };
        let f = if self.v6 { '6' } else { '4' };
        format!(
            "vnet.{}.{}.{:016x}.{k}{f}",
            self.server, self.vnet, self.cookie
        )
    }

    /// Parses a name (without the leading NUL); `None` if it is not ours.
    pub fn parse(b: &[u8]) -> Option<SockName> {
        let s = std::str::from_utf8(b).ok()?.strip_prefix("vnet.")?;
        let mut it = s.split('.');
        let server = it.next()?.parse().ok()?;
        let vnet = it.next()?.parse().ok()?;
        let cookie = u64::from_str_radix(it.next()?, 16).ok()?;
        let kf = it.next()?.as_bytes();
        if it.next().is_some() || kf.len() != 2 {
            return None;
        }
        let kind = match kf[0] {
            b't' => Kind::Tcp,
            b'u' => Kind::Udp,
            b'i' => Kind::Icmp,
            _ => return None,
        };
        let v6 = match kf[1] {
            b'4' => false,
            b'6' => true,
            _ => return None,
        };
        Some(SockName {
            server,
            vnet,
            cookie,
            kind,
            v6,
        })
    }

    /// The vnet socket name bound to `fd`, if `fd` is one.
    pub fn of_fd(fd: RawFd) -> Option<SockName> {
        // SAFETY: sockaddr_un is plain data; zero is a valid value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `sa` and `len` are valid for writes of the sizes given.
        let rc =
            unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_un).cast(), &mut len) };
        if rc != 0 || sa.sun_family != libc::AF_UNIX as libc::sa_family_t {
            return None;
        }
        let path_len = (len as usize).checked_sub(std::mem::size_of::<libc::sa_family_t>())?;
        let path: Vec<u8> = sa.sun_path[..path_len.min(sa.sun_path.len())]
            .iter()
            .map(|c| *c as u8)
            .collect();
        let (&0, rest) = path.split_first()? else {
            return None;
        };
        SockName::parse(rest)
    }
}

/// Bytes of an address on the data channels (accept records, datagram
/// headers).
pub const ADDR_LEN: usize = 24;

/// Encodes an address (or none) in [`ADDR_LEN`] bytes: family (0, 4 or 6),
/// a pad byte, the port (big-endian), the address (16 bytes), the IPv6
/// scope id (little-endian).
pub fn encode_addr(a: Option<SocketAddr>) -> [u8; ADDR_LEN] {
    let mut b = [0u8; ADDR_LEN];
    match a {
        None => {}
        Some(SocketAddr::V4(v4)) => {
            b[0] = 4;
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
        }
        Some(SocketAddr::V6(v6)) => {
            b[0] = 6;
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[4..20].copy_from_slice(&v6.ip().octets());
            b[20..24].copy_from_slice(&v6.scope_id().to_le_bytes());
        }
    }
    b
}

/// Bytes that are not an encoded address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an encoded address")]
pub struct BadAddr;

/// Decodes [`encode_addr`]'s bytes.
///
/// # Errors
/// [`BadAddr`] if they are not an address.
pub fn decode_addr(b: &[u8]) -> Result<Option<SocketAddr>, BadAddr> {
    if b.len() < ADDR_LEN {
        return Err(BadAddr);
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    match b[0] {
        0 => Ok(None),
        4 => Ok(Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
            port,
        ))),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[4..20]);
            let scope = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
            Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                scope,
            ))))
        }
        _ => Err(BadAddr),
    }
}

/// Sends `data` on `fd` with `fds` attached (`SCM_RIGHTS`), never raising
/// `SIGPIPE`.
///
/// # Errors
/// As `sendmsg(2)`.
pub fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd], flags: i32) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        assert!(
            space <= std::mem::size_of_val(&cbuf),
            "too many descriptors"
        );
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is aligned (u64) and has `space` bytes,
        // room for one header and `bytes` of descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` points to live buffers for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives into `buf` from `fd`, taking at most one attached descriptor
/// (close-on-exec); any others are closed.
///
/// # Errors
/// As `recvmsg(2)`.
pub fn recv_with_fd(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: `msg` points to live buffers for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got: Option<OwnedFd> = None;
    // SAFETY: walks the control messages the kernel wrote into `cbuf`, within
    // `msg_controllen`; each descriptor received is owned exactly once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let f = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if got.is_none() {
                        got = Some(f);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, got))
}

/// A pair of connected Unix sockets of `ty` (close-on-exec, the first end
/// non-blocking: the server's).
///
/// # Errors
/// As `socketpair(2)`.
pub fn pair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors written.
    let rc =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(a.as_raw_fd(), true)?;
    Ok((a, b))
}

/// Sets or clears `O_NONBLOCK`.
///
/// # Errors
/// As `fcntl(2)`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        let nfl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        if nfl != fl && libc::fcntl(fd, libc::F_SETFL, nfl) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A `sockaddr_un` for the path `p` and its length.
///
/// # Errors
/// `ENAMETOOLONG`.
pub fn unix_addr(p: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if p.len() >= sa.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (i, c) in p.iter().enumerate() {
        sa.sun_path[i] = *c as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + p.len() + 1;
    Ok((sa, len as libc::socklen_t))
}

/// Connects a `SOCK_SEQPACKET` session to the socket server at `path`.
///
/// # Errors
/// As socket(2) and connect(2).
pub fn connect_session(path: &[u8]) -> io::Result<OwnedFd> {
    let (sa, len) = unix_addr(path)?;
    // SAFETY: plain socket call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned here only.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        // SAFETY: `sa` is valid for `len` bytes; `fd` is open.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(fd);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Sends `req` (with `fd` attached) on session `conn` and waits for the
/// reply and the descriptor it may carry.
///
/// # Errors
/// The session failed (the server is gone), or the reply is not one.
pub fn call(conn: RawFd, req: &Req, fd: Option<RawFd>) -> io::Result<(Reply, Option<OwnedFd>)> {
    let body = serde_json::to_vec(req).map_err(io::Error::other)?;
    let fds: Vec<RawFd> = fd.into_iter().collect();
    loop {
        match send_with_fds(conn, &body, &fds, 0) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut buf = vec![0u8; MAX_MSG];
    let (n, got) = loop {
        match recv_with_fd(conn, &mut buf, 0) {
            Ok(x) => break x,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
    }
    let reply: Reply = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok((reply, got))
}

/// Binds `fd` to the abstract name `name`.
///
/// # Errors
/// As `bind(2)` (`EADDRINUSE` if the name is taken).
pub fn bind_abstract(fd: RawFd, name: &str) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain data; zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = name.as_bytes();
    if b.len() + 1 > sa.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (i, c) in b.iter().enumerate() {
        sa.sun_path[i + 1] = *c as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + b.len();
    // SAFETY: `sa` is valid for `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether some socket is bound to the abstract name `name` (tried by
/// binding a probe to it).
pub fn name_bound(name: &str) -> bool {
    // SAFETY: plain socket call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return true;
    }
    // SAFETY: `fd` was just created and is owned here only.
    let probe = unsafe { OwnedFd::from_raw_fd(fd) };
    matches!(bind_abstract(probe.as_raw_fd(), name), Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE))
}

/// The inode of an open descriptor (how the server recognises its sockets).
pub fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: stat is plain data; zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0).then_some(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = SockName {
            server: 42,
            vnet: 7,
            cookie: 0xdead_beef,
            kind: Kind::Udp,
            v6: true,
        };
        assert_eq!(SockName::parse(n.encode().as_bytes()), Some(n));
        assert_eq!(SockName::parse(b"vnet.1.2.zz.t4"), None);
        assert_eq!(SockName::parse(b"other"), None);
    }

    #[test]
    fn addrs_round_trip() {
        for a in [
            None,
            Some("10.0.0.2:80".parse().unwrap()),
            Some("[fd00::1%3]:5353".parse().unwrap()),
        ] {
            assert_eq!(decode_addr(&encode_addr(a)), Ok(a));
        }
        assert!(decode_addr(&[9u8; ADDR_LEN]).is_err());
    }
}
