//! The Rust client: sockets in any vnet, in the style of `std::net`, each a
//! real descriptor (usable with `poll`, mio or tokio through [`AsRawFd`]).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use vnet::sockets::client::{Net, TcpStream};
//! let red = Net::open("red")?;
//! let mut s = TcpStream::connect(&red, "10.0.0.2:80".parse().unwrap())?;
//! s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::wire::{self, ADDR_LEN, Kind, Opt, Reply, Req};

/// A session with the socket server, bound to one vnet: the handle sockets
/// are made from. Cheap to clone; sockets share it for their requests.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    session: Mutex<OwnedFd>,
    vnet: String,
}

/// The socket server's path: `VNET_SOCKETS`, or next to vnetd's default
/// control socket.
pub fn default_path() -> PathBuf {
    match std::env::var_os(wire::ENV_SOCKETS) {
        Some(p) => p.into(),
        None => wire::sockets_path(&crate::ctl::default_socket_path()),
    }
}

fn check(r: Reply) -> io::Result<Reply> {
    if r.errno == 0 {
        Ok(r)
    } else {
        // The errno is what callers match on; the message is for logs.
        if let Some(m) = &r.message {
            log::debug!("socket server: {m}");
        }
        Err(io::Error::from_raw_os_error(r.errno))
    }
}

impl Net {
    /// Opens a session with the socket server at the default path for
    /// sockets in `vnet`.
    ///
    /// # Errors
    /// No server there.
    pub fn open(vnet: &str) -> io::Result<Net> {
        Net::open_at(&default_path(), vnet)
    }

    /// As [`Net::open`], with the server at `path`.
    ///
    /// # Errors
    /// No server there.
    pub fn open_at(path: &Path, vnet: &str) -> io::Result<Net> {
        use std::os::unix::ffi::OsStrExt;
        let fd = wire::connect_session(path.as_os_str().as_bytes())?;
        Ok(Net {
            inner: Arc::new(Inner {
                session: Mutex::new(fd),
                vnet: vnet.to_string(),
            }),
        })
    }

    /// The vnet.
    pub fn vnet(&self) -> &str {
        &self.inner.vnet
    }

    fn call(&self, req: &Req, fd: Option<RawFd>) -> io::Result<(Reply, Option<OwnedFd>)> {
        let s = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
        let (r, f) = wire::call(s.as_raw_fd(), req, fd)?;
        Ok((check(r)?, f))
    }

    fn socket(&self, kind: Kind, v6: bool) -> io::Result<OwnedFd> {
        let req = Req::Socket {
            vnet: self.inner.vnet.clone(),
            v6,
            kind,
        };
        self.call(&req, None)?
            .1
            .ok_or_else(|| io::Error::other("socket server sent no descriptor"))
    }

    /// Resolves `name` in the vnet: its hosts entries, else its name
    /// servers, asked through the vnet (see [`super::resolve`]).
    ///
    /// # Errors
    /// `NotFound` for an unknown name, `TimedOut` when no name server
    /// answered.
    pub fn resolve(&self, name: &str) -> io::Result<Vec<std::net::IpAddr>> {
        super::resolve::lookup(self, name, true, true)
    }

    /// The vnet's hosts entry for `name`, or its resolver configuration.
    pub(crate) fn resolve_entry(&self, name: &str) -> io::Result<Reply> {
        let req = Req::Resolve {
            vnet: self.inner.vnet.clone(),
            name: name.to_string(),
        };
        Ok(self.call(&req, None)?.0)
    }
}

/// Requests every socket kind shares.
trait Sock: AsRawFd {
    fn net(&self) -> &Net;
    fn req(&self, req: Req) -> io::Result<Reply> {
        Ok(self.net().call(&req, Some(self.as_raw_fd()))?.0)
    }
    fn addr(&self, req: Req) -> io::Result<SocketAddr> {
        self.req(req)?
            .addr
            .ok_or_else(|| io::Error::other("socket server sent no address"))
    }
}

/// A TCP connection in a vnet.
pub struct TcpStream {
    net: Net,
    s: UnixStream,
}

impl Sock for TcpStream {
    fn net(&self) -> &Net {
        &self.net
    }
}

impl TcpStream {
    /// Connects to `addr` from `net`'s vnet (blocking).
    ///
    /// # Errors
    /// As `connect(2)`: `ConnectionRefused`, `ENETUNREACH`, `TimedOut`...
    pub fn connect(net: &Net, addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = net.socket(Kind::Tcp, addr.is_ipv6())?;
        net.call(&Req::Connect { addr, wait: true }, Some(fd.as_raw_fd()))?;
        Ok(TcpStream {
            net: net.clone(),
            s: UnixStream::from(fd),
        })
    }

    /// The peer's address.
    ///
    /// # Errors
    /// `NotConnected`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.addr(Req::PeerAddr)
    }

    /// The local address.
    ///
    /// # Errors
    /// The server is gone.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addr(Req::LocalAddr)
    }

    /// Shuts down one or both directions.
    ///
    /// # Errors
    /// As `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.s.shutdown(how)
    }

    /// `TCP_NODELAY`.
    ///
    /// # Errors
    /// The server is gone.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.req(Req::SetOpt {
            opt: Opt::NoDelay,
            val: i64::from(on),
        })
        .map(|_| ())
    }

    /// Non-blocking reads and writes.
    ///
    /// # Errors
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.s.set_nonblocking(on)
    }

    /// Another handle on the same connection.
    ///
    /// # Errors
    /// As `dup(2)`.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            net: self.net.clone(),
            s: self.s.try_clone()?,
        })
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.s.read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.s.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.s.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.s.as_fd()
    }
}

impl From<TcpStream> for OwnedFd {
    fn from(s: TcpStream) -> OwnedFd {
        s.s.into()
    }
}

/// A listening TCP socket in a vnet.
pub struct TcpListener {
    net: Net,
    fd: OwnedFd,
    v6: bool,
}

impl Sock for TcpListener {
    fn net(&self) -> &Net {
        &self.net
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl TcpListener {
    /// Listens on `addr` in `net`'s vnet (port 0 picks one).
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`.
    pub fn bind(net: &Net, addr: SocketAddr) -> io::Result<TcpListener> {
        let fd = net.socket(Kind::Tcp, addr.is_ipv6())?;
        let l = TcpListener {
            net: net.clone(),
            fd,
            v6: addr.is_ipv6(),
        };
        l.req(Req::Bind { addr })?;
        l.req(Req::Listen { backlog: 128 })?;
        Ok(l)
    }

    /// The local address (with the port picked).
    ///
    /// # Errors
    /// The server is gone.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addr(Req::LocalAddr)
    }

    /// Waits for a connection (or `WouldBlock` when non-blocking).
    ///
    /// # Errors
    /// As `accept(2)`.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let mut rec = [0u8; ADDR_LEN];
        let (n, fd) = wire::recv_with_fd(self.fd.as_raw_fd(), &mut rec, libc::MSG_WAITALL)?;
        let (Some(fd), Ok(Some(peer))) = (fd, wire::decode_addr(&rec[..n])) else {
            return Err(io::Error::other("socket server sent a bad accept record"));
        };
        let _ = self.v6;
        Ok((
            TcpStream {
                net: self.net.clone(),
                s: UnixStream::from(fd),
            },
            peer,
        ))
    }

    /// Non-blocking accept.
    ///
    /// # Errors
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        wire::set_nonblocking(self.fd.as_raw_fd(), on)
    }
}

/// A UDP socket in a vnet.
pub struct UdpSocket {
    net: Net,
    fd: OwnedFd,
}

impl Sock for UdpSocket {
    fn net(&self) -> &Net {
        &self.net
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl UdpSocket {
    /// A socket bound to `addr` in `net`'s vnet (port 0 picks one).
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`.
    pub fn bind(net: &Net, addr: SocketAddr) -> io::Result<UdpSocket> {
        let fd = net.socket(Kind::Udp, addr.is_ipv6())?;
        let u = UdpSocket {
            net: net.clone(),
            fd,
        };
        u.req(Req::Bind { addr })?;
        Ok(u)
    }

    /// The local address.
    ///
    /// # Errors
    /// The server is gone.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addr(Req::LocalAddr)
    }

    /// Sets the default peer (and filters datagrams to it).
    ///
    /// # Errors
    /// As `connect(2)`.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.req(Req::Connect { addr, wait: true }).map(|_| ())
    }

    /// Sends a datagram to `addr`.
    ///
    /// # Errors
    /// As `sendmsg(2)`.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.out(buf, Some(addr))
    }

    /// Sends a datagram to the connected peer.
    ///
    /// # Errors
    /// As `sendmsg(2)`.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.out(buf, None)
    }

    fn out(&self, buf: &[u8], to: Option<SocketAddr>) -> io::Result<usize> {
        let hdr = wire::encode_addr(to);
        let iov = [IoSlice::new(&hdr), IoSlice::new(buf)];
        // SAFETY: writev from two live slices.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr().cast(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).saturating_sub(ADDR_LEN))
    }

    /// Receives a datagram and its source.
    ///
    /// # Errors
    /// As `recvmsg(2)`.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut hdr = [0u8; ADDR_LEN];
        let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)];
        // SAFETY: readv into two live slices.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_mut_ptr().cast(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
        }
        match wire::decode_addr(&hdr) {
            Ok(Some(from)) => Ok(((n as usize).saturating_sub(ADDR_LEN), from)),
            _ => Err(io::Error::other("socket server sent a bad datagram header")),
        }
    }

    /// Non-blocking sends and receives.
    ///
    /// # Errors
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        wire::set_nonblocking(self.fd.as_raw_fd(), on)
    }
}
