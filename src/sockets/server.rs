//! The socket server: sessions with client processes, and the requests that
//! create and configure sockets. Data never passes here; see
//! [`super::table`] for the pump and [`super::wire`] for the protocol.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dns::Resolv;
use super::table::{self, Sock, Sockets, St};
use super::wire::{self, Kind, Opt, Reply, Req, SockName};
use crate::driver::realtime::{Realtime, RtHandle};
use crate::stack::Inet;
use crate::vnet::{Registry, Vnet, VnetId};

/// Sessions one user other than root and the admin may hold.
pub const MAX_SESSIONS_PER_USER: usize = 1024;
/// Sessions in all.
pub const MAX_SESSIONS: usize = 8192;

/// How often a blocking connect (or `SO_ERROR` on a connect in progress)
/// looks again at a connection that is still being made (the pump wakes it
/// as soon as the outcome is known).
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Names client ends: unique abstract names that say "vnet socket".
pub(crate) struct Namer {
    pid: u32,
    next: AtomicU64,
}

impl Namer {
    /// Binds `cli` to a fresh name for a socket of `vnet`.
    pub(crate) fn name(
        &self,
        cli: &OwnedFd,
        vnet: u32,
        kind: Kind,
        v6: bool,
    ) -> std::io::Result<SockName> {
        loop {
            let name = SockName {
                server: self.pid,
                vnet,
                cookie: self.next.fetch_add(1, Ordering::Relaxed),
                kind,
                v6,
            };
            match wire::bind_abstract(cli.as_raw_fd(), &name.encode()) {
                Ok(()) => return Ok(name),
                // Someone took the name: take the next.
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a request came to.
enum Outcome {
    Done(Reply, Option<OwnedFd>),
    /// Wait for a connect to finish, then answer as the request says.
    Wait(mpsc::Receiver<()>),
}

/// The socket server of one vnetd.
pub struct SocketServer {
    reg: Arc<Registry>,
    rt: RtHandle,
    namer: Namer,
    admin: u32,
    sessions: AtomicUsize,
    per_uid: Mutex<std::collections::HashMap<u32, usize>>,
    stopping: AtomicBool,
}

impl SocketServer {
    /// A socket server for the vnets of `reg`, run by `rt`; `admin` is the
    /// user vnetd runs as. Installs the data pump in `rt`.
    pub fn new(reg: Arc<Registry>, rt: &Realtime, admin: u32) -> Arc<SocketServer> {
        reg.register::<Sockets>();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let srv = Arc::new(SocketServer {
            reg,
            rt: rt.handle(),
            namer: Namer {
                pid: std::process::id(),
                next: AtomicU64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            },
            admin,
            sessions: AtomicUsize::new(0),
            per_uid: Mutex::new(std::collections::HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        let me = Arc::clone(&srv);
        rt.set_io_hook(Arc::new(move |now, ready| {
            table::service(&me.namer, &me.rt, now, ready)
        }));
        srv
    }

    fn may_use(&self, uid: u32, v: &Vnet) -> bool {
        uid == 0 || uid == self.admin || v.owner() == uid
    }

    fn vnet_for(&self, uid: u32, name: &str) -> Result<Arc<Vnet>, Box<Reply>> {
        let v = self.reg.by_name(name).ok_or_else(|| {
            Box::new(Reply::err_msg(
                libc::ENXIO,
                format!("vnet {name:?}: no such vnet"),
            ))
        })?;
        if !self.may_use(uid, &v) {
            return Err(Box::new(Reply::err_msg(
                libc::EACCES,
                format!("vnet {name:?} is not uid {uid}'s to use"),
            )));
        }
        Ok(v)
    }

    /// Carries out one request from user `uid`; `fd` is the descriptor
    /// that came with it.
    pub fn handle(&self, req: Req, fd: Option<OwnedFd>, uid: u32) -> (Reply, Option<OwnedFd>) {
        let connect = matches!(req, Req::Connect { .. });
        match self.run(req, fd.as_ref(), uid) {
            Outcome::Done(r, f) => (r, f),
            Outcome::Wait(mut rx) => loop {
                let _ = rx.recv_timeout(CONNECT_WAIT);
                // Answer from where the socket stands now (the connect's
                // outcome is its pending error), or wait on if it is still
                // connecting (a long net.inet.tcp.keepinit).
                match self.run(Req::Error { wait: true }, fd.as_ref(), uid) {
                    Outcome::Done(mut r, f) => {
                        if connect && r.errno == 0 {
                            r.errno = r.val as i32;
                            r.val = 0;
                        }
                        break (r, f);
                    }
                    Outcome::Wait(next) => rx = next,
                }
            },
        }
    }

    fn run(&self, req: Req, fd: Option<&OwnedFd>, uid: u32) -> Outcome {
        let done = |r: Reply| Outcome::Done(r, None);
        match req {
            Req::Socket { vnet, v6, kind } => match self.vnet_for(uid, &vnet) {
                Ok(v) => match self.socket(&v, kind, v6, |_| {}) {
                    Ok(cli) => Outcome::Done(Reply::default(), Some(cli)),
                    Err(r) => done(*r),
                },
                Err(r) => done(*r),
            },
            Req::Resolve { vnet, name } => match self.vnet_for(uid, &vnet) {
                Ok(v) => {
                    let r = v.enter(|| {
                        crate::vnet::with::<Resolv, _>(|r| {
                            (r.lookup(&name), r.nameservers.clone(), r.search.clone())
                        })
                    });
                    match r {
                        Ok((addrs, _, _)) if !addrs.is_empty() => done(Reply {
                            addrs,
                            ..Reply::default()
                        }),
                        Ok((_, ns, _)) if ns.is_empty() => done(Reply::err(libc::ENOENT)),
                        Ok((_, nameservers, search)) => done(Reply {
                            nameservers,
                            search,
                            ..Reply::default()
                        }),
                        Err(_) => done(Reply::err(libc::ENXIO)),
                    }
                }
                Err(r) => done(*r),
            },
            Req::Move { vnet } => {
                let Some(fd) = fd else {
                    return done(Reply::err(libc::EBADF));
                };
                let to = match self.vnet_for(uid, &vnet) {
                    Ok(v) => v,
                    Err(r) => return done(*r),
                };
                // Take the record out of its vnet if nothing is bound yet.
                let taken = self.on_socket(fd, |t, _inet, ino| {
                    let s = t.map.get(&ino).ok_or(libc::EBADF)?;
                    if s.bound.is_some() || !matches!(s.st, St::Fresh | St::Udp(None)) {
                        return Err(libc::EISCONN);
                    }
                    let s = t.remove(ino).ok_or(libc::EBADF)?;
                    Ok((s.kind, s.v6, s.opts))
                });
                match taken {
                    Ok((kind, v6, opts)) => match self.socket(&to, kind, v6, |s| s.opts = opts) {
                        Ok(cli) => Outcome::Done(Reply::default(), Some(cli)),
                        Err(r) => done(*r),
                    },
                    Err(e) => done(Reply::err(e)),
                }
            }
            other => {
                let Some(fd) = fd else {
                    return done(Reply::err(libc::EBADF));
                };
                match self.on_socket(fd, |t, inet, ino| {
                    let vnet = t.vnet_name.clone();
                    let s = t.map.get_mut(&ino).ok_or(libc::EBADF)?;
                    Ok(op(s, inet, other, vnet))
                }) {
                    Ok(o) => o,
                    Err(e) => done(Reply::err(e)),
                }
            }
        }
    }

    /// Makes a socket in `v`; returns the client's end.
    fn socket(
        &self,
        v: &Arc<Vnet>,
        kind: Kind,
        v6: bool,
        setup: impl FnOnce(&mut Sock),
    ) -> Result<OwnedFd, Box<Reply>> {
        let ty = match kind {
            Kind::Tcp => libc::SOCK_STREAM,
            Kind::Udp | Kind::Icmp => libc::SOCK_SEQPACKET,
        };
        let io = |e: std::io::Error| Box::new(Reply::err(e.raw_os_error().unwrap_or(libc::EIO)));
        // Over the vnet's (or an ancestor's, or its owner's) socket quota:
        // EMFILE, as a process out of descriptors gets, and the rule.
        let quota = v
            .account()
            .charge(crate::vnet::limits::Resource::Sockets, 1)
            .map_err(|e| Box::new(Reply::err_msg(libc::EMFILE, e.to_string())))?;
        let (srv, cli) = wire::pair(ty).map_err(io)?;
        let name = self.namer.name(&cli, v.id().0, kind, v6).map_err(io)?;
        let ino = wire::inode(cli.as_raw_fd()).ok_or_else(|| Box::new(Reply::err(libc::EIO)))?;
        let mut s = Sock::new(srv, &name, 0);
        s.quota = Some(quota);
        setup(&mut s);
        let rt = &self.rt;
        v.enter(|| crate::vnet::with::<Sockets, _>(|t| t.insert(rt, ino, s)))
            .map_err(|_| Box::new(Reply::err(libc::ENXIO)))?
            .map_err(io)?;
        self.rt.kick(v.id());
        Ok(cli)
    }

    /// Runs `f` on the record of the socket `fd` is, in its vnet's scope,
    /// then lets the vnet's worker move data.
    fn on_socket<R>(
        &self,
        fd: &OwnedFd,
        f: impl FnOnce(&mut Sockets, &mut Inet, u64) -> Result<R, i32>,
    ) -> Result<R, i32> {
        let raw = fd.as_raw_fd();
        let name = SockName::of_fd(raw).ok_or(libc::ENOTSOCK)?;
        if name.server != self.namer.pid {
            return Err(libc::EBADF);
        }
        let ino = wire::inode(raw).ok_or(libc::EBADF)?;
        let v = self.reg.get(VnetId(name.vnet)).ok_or(libc::EBADF)?;
        let out = v
            .enter(|| {
                crate::vnet::with_vars(|vars| {
                    let (t, inet) = vars.get2_mut::<Sockets, Inet>().ok_or(libc::ENXIO)?;
                    match t.map.get(&ino) {
                        Some(s) if s.cookie == name.cookie => {}
                        _ => return Err(libc::EBADF),
                    }
                    f(t, inet, ino)
                })
            })
            .map_err(|_| libc::ENXIO)?;
        self.rt.kick(v.id());
        out
    }

    /// Serves sessions on `listener` (a `SOCK_SEQPACKET` socket) until
    /// [`SocketServer::stop`]; each session gets a thread.
    pub fn serve(self: &Arc<Self>, listener: OwnedFd) {
        loop {
            // SAFETY: accept4 on the listening socket this call owns.
            let c = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if c < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) {
                    continue;
                }
                log::warn!("sockets: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            // SAFETY: `c` was just returned by accept4 and is owned here.
            let conn = unsafe { OwnedFd::from_raw_fd(c) };
            let Some(uid) = crate::ctl::peercred::peer_uid_fd(conn.as_raw_fd()) else {
                continue;
            };
            if !self.admit(uid) {
                let r = Reply::err_msg(libc::EAGAIN, format!("too many sessions for uid {uid}"));
                let _ = wire::send_with_fds(
                    conn.as_raw_fd(),
                    &serde_json::to_vec(&r).unwrap_or_default(),
                    &[],
                    0,
                );
                continue;
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("vnetd-sockets".into())
                .spawn(move || {
                    me.session(&conn, uid);
                    me.release(uid);
                });
            if spawned.is_err() {
                self.release(uid);
            }
        }
    }

    fn admit(&self, uid: u32) -> bool {
        let mut per = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per.entry(uid).or_insert(0);
        let privileged = uid == 0 || uid == self.admin;
        if !privileged
            && (*mine >= MAX_SESSIONS_PER_USER
                || self.sessions.load(Ordering::SeqCst) >= MAX_SESSIONS)
        {
            return false;
        }
        *mine += 1;
        self.sessions.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn release(&self, uid: u32) {
        let mut per = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&uid);
            }
        }
        self.sessions.fetch_sub(1, Ordering::SeqCst);
    }

    /// One client's session: a request, a reply, until it hangs up.
    fn session(&self, conn: &OwnedFd, uid: u32) {
        let mut buf = vec![0u8; wire::MAX_MSG];
        loop {
            let (n, fd) = match wire::recv_with_fd(conn.as_raw_fd(), &mut buf, 0) {
                Ok((0, _)) => return,
                Ok(x) => x,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => return,
            };
            let (reply, out) = match serde_json::from_slice::<Req>(&buf[..n]) {
                Ok(req) => self.handle(req, fd, uid),
                Err(e) => (
                    Reply::err_msg(libc::EINVAL, format!("bad request: {e}")),
                    None,
                ),
            };
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            let fds: Vec<RawFd> = out.iter().map(|f| f.as_raw_fd()).collect();
            if wire::send_with_fds(conn.as_raw_fd(), &body, &fds, 0).is_err() {
                return;
            }
        }
    }

    /// Makes [`SocketServer::serve`] return after its next connection.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// How many sockets the server holds in `v`.
    pub fn count(&self, v: &Arc<Vnet>) -> usize {
        v.enter(|| crate::vnet::with::<Sockets, _>(|t| t.len()))
            .unwrap_or(0)
    }
}

/// A listening `SOCK_SEQPACKET` socket at `path` (mode 0666: every request
/// is authorised by the caller's uid).
///
/// # Errors
/// As socket(2), bind(2), listen(2).
pub fn listen(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain socket call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned here only.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Bound and listening under a temporary name, then renamed: a client
    // that sees the path can connect (no window between bind and listen
    // in which it would be refused).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let (sa, len) = wire::unix_addr(tmp.as_os_str().as_bytes())?;
    // SAFETY: `sa` is valid for `len` bytes; `fd` is open.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ready = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .and_then(|()| {
            // SAFETY: listen(2) on the socket owned here.
            if unsafe { libc::listen(fd.as_raw_fd(), 1024) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(fd)
}

/// Applies one request on a socket record (in its vnet's scope).
fn op(s: &mut Sock, inet: &mut Inet, req: Req, vnet: String) -> Outcome {
    let ok = || Outcome::Done(Reply::default(), None);
    let fail = |e: i32| Outcome::Done(Reply::err(e), None);
    let fam_ok = |a: &SocketAddr| s.v6 || a.is_ipv4();
    match req {
        Req::Bind { addr } => {
            if !fam_ok(&addr) {
                return fail(libc::EAFNOSUPPORT);
            }
            if s.bound.is_some() || !matches!(s.st, St::Fresh | St::Udp(None)) {
                return fail(libc::EINVAL);
            }
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            };
            if !ip.is_unspecified() && !inet.is_local(ip.into()) {
                return fail(libc::EADDRNOTAVAIL);
            }
            if s.kind == Kind::Tcp
                && let Err(e) = inet.tcp_bind_check(addr, s.opts.reuse_addr || s.opts.reuse_port)
            {
                return fail(e.errno());
            }
            s.bound = Some(addr);
            if s.kind != Kind::Tcp
                && let Err(e) = table::udp_bound(s, inet)
            {
                s.bound = None;
                return fail(e.errno());
            }
            ok()
        }
        Req::Listen { backlog } => match s.st {
            St::Fresh => {
                let local = s.bound.unwrap_or_else(|| s.any());
                let backlog = (backlog as usize).clamp(1, 4096);
                // An AF_INET socket takes IPv4 only, an AF_INET6 one both
                // unless IPV6_V6ONLY (or bound to an IPv6 address).
                let family = match local {
                    SocketAddr::V4(_) => Some(smoltcp::wire::IpVersion::Ipv4),
                    SocketAddr::V6(a) if s.opts.v6only || !a.ip().is_unspecified() => {
                        match a.ip().to_ipv4_mapped() {
                            Some(_) => Some(smoltcp::wire::IpVersion::Ipv4),
                            None => Some(smoltcp::wire::IpVersion::Ipv6),
                        }
                    }
                    SocketAddr::V6(_) => None,
                };
                let reuse = s.opts.reuse_addr || s.opts.reuse_port;
                match inet.tcp_listen_family(local, backlog, reuse, family) {
                    Ok(id) => {
                        s.st = St::Listening(id);
                        ok()
                    }
                    Err(e) => fail(e.errno()),
                }
            }
            St::Listening(_) => ok(),
            _ if s.kind != Kind::Tcp => fail(libc::EOPNOTSUPP),
            _ => fail(libc::EINVAL),
        },
        Req::Connect { addr, wait } => {
            if !fam_ok(&addr) {
                return fail(libc::EAFNOSUPPORT);
            }
            match s.st {
                St::Fresh => match inet.tcp_connect(addr, s.bound, s.opts.reuse_addr) {
                    Ok(id) => {
                        s.st = St::Connecting(id);
                        if wait {
                            let (tx, rx) = mpsc::channel();
                            s.waiters.push(tx);
                            Outcome::Wait(rx)
                        } else {
                            fail(libc::EINPROGRESS)
                        }
                    }
                    Err(e) => fail(e.errno()),
                },
                St::Connecting(_) => fail(libc::EALREADY),
                St::Connected(_) => fail(libc::EISCONN),
                St::Failed => fail(s.err.take().unwrap_or(libc::ECONNABORTED)),
                St::Listening(_) => fail(libc::EINVAL),
                St::Udp(_) => match table::udp_bound(s, inet) {
                    Ok(_) => {
                        s.peer = Some(addr);
                        ok()
                    }
                    Err(e) => fail(e.errno()),
                },
            }
        }
        Req::Error { wait } => {
            if wait && matches!(s.st, St::Connecting(_)) {
                let (tx, rx) = mpsc::channel();
                s.waiters.push(tx);
                return Outcome::Wait(rx);
            }
            let e = s.err.take().unwrap_or(0);
            Outcome::Done(
                Reply {
                    val: i64::from(e),
                    ..Reply::default()
                },
                None,
            )
        }
        Req::LocalAddr => {
            let a = match s.st {
                St::Connecting(id) | St::Connected(id) | St::Listening(id) | St::Udp(Some(id)) => {
                    inet.local_addr(id).ok()
                }
                _ => None,
            };
            let a = a.or(s.bound).unwrap_or_else(|| s.any());
            // A ping socket's "port" is its echo identifier.
            let a = if s.kind == Kind::Icmp {
                SocketAddr::new(s.bound.map_or(s.any().ip(), |b| b.ip()), s.ident)
            } else {
                a
            };
            let a = match a {
                // The stack says 0.0.0.0 for "any address" of either family.
                SocketAddr::V4(v4) if s.v6 && v4.ip().is_unspecified() => {
                    SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), v4.port())
                }
                a if s.v6 => table::to_v6(a),
                a => a,
            };
            Outcome::Done(
                Reply {
                    addr: Some(a),
                    ..Reply::default()
                },
                None,
            )
        }
        Req::PeerAddr => {
            let a = match s.st {
                St::Connected(id) => inet.peer_addr(id).ok(),
                St::Udp(_) => s.peer,
                _ => None,
            };
            match a {
                Some(a) => Outcome::Done(
                    Reply {
                        addr: Some(if s.v6 { table::to_v6(a) } else { a }),
                        ..Reply::default()
                    },
                    None,
                ),
                None => fail(libc::ENOTCONN),
            }
        }
        Req::SetOpt { opt, val } => {
            let on = val != 0;
            match opt {
                Opt::ReuseAddr => s.opts.reuse_addr = on,
                Opt::ReusePort => s.opts.reuse_port = on,
                Opt::KeepAlive => s.opts.keepalive = on,
                Opt::NoDelay => s.opts.nodelay = on,
                Opt::V6Only => s.opts.v6only = on,
            }
            if let St::Connected(id) = s.st {
                let ka = s.opts.keepalive.then_some(crate::Duration::from_secs(75));
                let _ = inet.tcp_set_opts(id, s.opts.nodelay, ka);
            }
            ok()
        }
        Req::GetOpt { opt } => {
            let v = match opt {
                Opt::ReuseAddr => s.opts.reuse_addr,
                Opt::ReusePort => s.opts.reuse_port,
                Opt::KeepAlive => s.opts.keepalive,
                Opt::NoDelay => s.opts.nodelay,
                Opt::V6Only => s.opts.v6only,
            };
            Outcome::Done(
                Reply {
                    val: i64::from(v),
                    ..Reply::default()
                },
                None,
            )
        }
        Req::Info => Outcome::Done(
            Reply {
                vnet: Some(vnet),
                listening: matches!(s.st, St::Listening(_)),
                ..Reply::default()
            },
            None,
        ),
        Req::Socket { .. } | Req::Move { .. } | Req::Resolve { .. } => fail(libc::EINVAL),
    }
}
