//! libvnet_preload.so: puts an unmodified program's sockets in a vnet.
//!
//! Loaded with `LD_PRELOAD` (what `vnetctl exec VNET -- CMD` does), it
//! takes over the glibc socket calls for `AF_INET` and `AF_INET6`: a new
//! socket comes from vnetd's socket server, in the vnet named by `VNET`.
//! Every other descriptor (files, pipes, `AF_UNIX`, netlink) goes to libc
//! untouched, and so does the data of TCP sockets: a vnet socket is a real
//! descriptor (one end of a Unix socket pair that vnetd pumps into the vnet's
//! stack), so `read`, `write`, `poll`, `select`, `epoll`, `dup`, `fcntl`,
//! `close`, `fork` and `exec` need nothing from us. Only calls about the
//! network (`bind`, `connect`, `listen`, `accept`, `getsockname`, socket
//! options, UDP addressing, name lookups) become requests.
//!
//! Nothing here keeps state a program could lose: a descriptor says by its
//! own (abstract) name that it is a vnet socket, so sockets survive `dup`,
//! `fork` and `exec`. The one cache, the kind of each descriptor number,
//! only saves system calls and is checked before it is trusted.
//!
//! No call panics across the C boundary: a failure is `-1` and an errno.
//!
//! Beyond libc's API, for programs that want sockets in several vnets (the
//! analogue of FreeBSD's `SO_SETFIB`; see `include/vnet.h`): `vnet_socket`,
//! `vnet_setvnet`, `vnet_getvnet`, and the socket option `SO_VNET` at level
//! `SOL_VNET`.

#![allow(clippy::missing_safety_doc)]

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use libc::{sockaddr, socklen_t, ssize_t};
use vnet::sockets::wire::{self, ADDR_LEN, Kind, Opt, Reply, Req, SockName};

/// `setsockopt` level of vnet's own options ("VN").
pub const SOL_VNET: c_int = 0x564e;
/// `SO_VNET`: the vnet of a socket not yet bound or connected, by name.
pub const SO_VNET: c_int = 1;

// ---------------------------------------------------------------------------
// The real libc functions.

macro_rules! real {
    ($name:ident : fn($($a:ty),*) -> $r:ty) => {{
        static P: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
        let mut p = P.load(Ordering::Relaxed);
        if p.is_null() {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds
            // libc's definition behind ours.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!(stringify!($name), "\0").as_ptr().cast()) };
            P.store(p, Ordering::Relaxed);
        }
        assert!(!p.is_null(), concat!("vnet preload: no libc ", stringify!($name)));
        // SAFETY: `p` is libc's function of this name, of this signature.
        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($a),*) -> $r>(p) }
    }};
}

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

// ---------------------------------------------------------------------------
// Re-entrance: our own code calls libc (which may be us); those calls go
// straight to libc.

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

struct Inside;

impl Inside {
    /// Enters our code, unless this thread is in it already (or exiting).
    /// (The guard is made only on entry: a guard made and dropped would
    /// clear the flag of the call that holds it.)
    fn enter() -> Option<Inside> {
        INSIDE
            .try_with(|c| (!c.replace(true)).then(|| Inside))
            .ok()
            .flatten()
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|c| c.set(false));
    }
}

/// Runs `f` as an intercepted call: `-1` with errno on failure, and never
/// a panic across the C boundary.
fn guarded<R: From<i8>>(f: impl FnOnce() -> Result<R, i32>) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            set_errno(e);
            R::from(-1)
        }
        Err(_) => {
            set_errno(libc::EIO);
            R::from(-1)
        }
    }
}

// ---------------------------------------------------------------------------
// What each descriptor is (a cache; verified before use).

const UNKNOWN: u8 = 0;
const OTHER: u8 = 1;
const TCP: u8 = 2;
const UDP: u8 = 3;
const LISTENER: u8 = 4;
const KINDS_LEN: usize = 1 << 16;

static KINDS: [AtomicU8; KINDS_LEN] = [const { AtomicU8::new(UNKNOWN) }; KINDS_LEN];

fn kind_of(fd: c_int) -> u8 {
    usize::try_from(fd)
        .ok()
        .and_then(|i| KINDS.get(i))
        .map_or(UNKNOWN, |k| k.load(Ordering::Relaxed))
}

fn set_kind(fd: c_int, k: u8) {
    if let Some(slot) = usize::try_from(fd).ok().and_then(|i| KINDS.get(i)) {
        slot.store(k, Ordering::Relaxed);
    }
}

/// The vnet socket `fd` is, if it is one (asks the kernel for its name).
fn vnet_sock(fd: c_int) -> Option<SockName> {
    let n = SockName::of_fd(fd);
    let k = match n {
        None => OTHER,
        Some(n) if n.kind != Kind::Tcp => UDP,
        Some(_) if kind_of(fd) == LISTENER => LISTENER,
        Some(_) => TCP,
    };
    set_kind(fd, k);
    n
}

/// Whether `fd` may be a vnet UDP socket, by the cache alone (the data
/// calls of everything else must not pay a system call).
fn maybe_udp(fd: c_int) -> bool {
    kind_of(fd) == UDP
}

/// Scans inherited descriptors (after `exec`) so UDP sockets are known.
extern "C" fn scan_inherited() {
    let Some(_in) = Inside::enter() else { return };
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<c_int>().ok()) {
                vnet_sock(fd);
            }
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = scan_inherited;

// ---------------------------------------------------------------------------
// Sessions with the socket server: one per thread, re-made after fork or
// when the program closed it.

struct Session {
    fd: RawFd,
    ino: u64,
    pid: u32,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn server_path() -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    vnet::sockets::client::default_path()
        .as_os_str()
        .as_bytes()
        .to_vec()
}

fn default_vnet() -> Option<String> {
    std::env::var(wire::ENV_VNET).ok().filter(|v| !v.is_empty())
}

/// Where session descriptors go: out of the way of programs that expect
/// low numbers to be theirs.
const SESSION_FD_MIN: c_int = 100;

fn session_fd() -> Result<RawFd, i32> {
    let pid = std::process::id();
    SESSION
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if let Some(cur) = s.as_ref() {
                let ours = wire::inode(cur.fd) == Some(cur.ino);
                if ours && cur.pid == pid {
                    return Ok(cur.fd);
                }
                if ours {
                    // Inherited across fork: the parent keeps its own.
                    // SAFETY: closes our copy of the session descriptor.
                    unsafe { libc::close(cur.fd) };
                }
                *s = None;
            }
            let fd = wire::connect_session(&server_path()).map_err(|e| {
                e.raw_os_error()
                    .filter(|e| *e != libc::ENOENT)
                    .unwrap_or(libc::ENETDOWN)
            })?;
            // SAFETY: fcntl on the descriptor just made.
            let high =
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, SESSION_FD_MIN) };
            let fd = if high >= 0 {
                // SAFETY: `high` was just made by F_DUPFD and is ours.
                unsafe { OwnedFd::from_raw_fd(high) }
            } else {
                fd
            };
            let ino = wire::inode(fd.as_raw_fd()).ok_or(libc::EIO)?;
            let raw = fd.into_raw_fd();
            *s = Some(Session { fd: raw, ino, pid });
            Ok(raw)
        })
        .map_err(|_| libc::EIO)?
}

/// Sends a request (about `fd`, if given) and returns the reply, or its
/// errno.
fn call(req: &Req, fd: Option<RawFd>) -> Result<(Reply, Option<OwnedFd>), i32> {
    let mut tries = 0;
    loop {
        let s = session_fd()?;
        match wire::call(s, req, fd) {
            Ok((r, f)) if r.errno == 0 => return Ok((r, f)),
            Ok((r, _)) => return Err(r.errno),
            Err(e) => {
                // A dead session (vnetd restarted, or the program closed
                // it): forget it and try once more.
                let _ = SESSION.try_with(|s| s.borrow_mut().take());
                tries += 1;
                if tries > 1 {
                    return Err(e.raw_os_error().unwrap_or(libc::ENETDOWN));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Addresses.

unsafe fn read_addr(addr: *const sockaddr, len: socklen_t) -> Result<Option<SocketAddr>, i32> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: the caller gives `len` readable bytes at `addr`.
    let fam = c_int::from(unsafe { (*addr).sa_family });
    match fam {
        libc::AF_UNSPEC => Ok(None),
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: long enough for a sockaddr_in; read unaligned.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            Ok(Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: long enough for a sockaddr_in6; read unaligned.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))))
        }
        libc::AF_INET | libc::AF_INET6 => Err(libc::EINVAL),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `a` as the socket's family sees it (an IPv4 address on an IPv6
/// socket is v4-mapped), truncating to `*len` as the kernel does.
unsafe fn write_addr(a: SocketAddr, v6: bool, out: *mut sockaddr, len: *mut socklen_t) {
    if out.is_null() || len.is_null() {
        return;
    }
    let a = match a {
        SocketAddr::V4(v4) if v6 => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        a => a,
    };
    let mut buf = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
    let n = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in is plain data; zero is valid.
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            let n = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: copies the struct's bytes into a buffer big enough.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&s as *const libc::sockaddr_in).cast::<u8>(),
                    buf.as_mut_ptr(),
                    n,
                )
            };
            n
        }
        SocketAddr::V6(v6a) => {
            // SAFETY: sockaddr_in6 is plain data; zero is valid.
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6a.port().to_be();
            s.sin6_addr.s6_addr = v6a.ip().octets();
            s.sin6_scope_id = v6a.scope_id();
            s.sin6_flowinfo = v6a.flowinfo();
            let n = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: copies the struct's bytes into a buffer big enough.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&s as *const libc::sockaddr_in6).cast::<u8>(),
                    buf.as_mut_ptr(),
                    n,
                )
            };
            n
        }
    };
    // SAFETY: the caller gives `*len` writable bytes at `out`.
    unsafe {
        let room = (*len as usize).min(n);
        std::ptr::copy_nonoverlapping(buf.as_ptr(), out.cast::<u8>(), room);
        *len = n as socklen_t;
    }
}

// ---------------------------------------------------------------------------
// Creating sockets.

fn new_socket(vnet: &str, domain: c_int, ty: c_int, protocol: c_int) -> Result<c_int, i32> {
    let v6 = domain == libc::AF_INET6;
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let kind = match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Tcp,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Udp,
        (libc::SOCK_DGRAM, libc::IPPROTO_ICMP) if !v6 => Kind::Icmp,
        (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6) if v6 => Kind::Icmp,
        // Raw sockets are not served (yet): refuse rather than hand out a
        // host socket that would escape the vnet.
        (libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_RAW, _) => {
            return Err(libc::EPROTONOSUPPORT);
        }
        _ => return Err(libc::ESOCKTNOSUPPORT),
    };
    let (_, fd) = call(
        &Req::Socket {
            vnet: vnet.to_string(),
            v6,
            kind,
        },
        None,
    )?;
    let fd = fd.ok_or(libc::EIO)?.into_raw_fd();
    finish_fd(fd, ty);
    set_kind(fd, if kind == Kind::Tcp { TCP } else { UDP });
    Ok(fd)
}

/// Applies `SOCK_NONBLOCK` and `SOCK_CLOEXEC` from `flags` to a descriptor
/// received close-on-exec and blocking.
fn finish_fd(fd: c_int, flags: c_int) {
    if flags & libc::SOCK_NONBLOCK != 0 {
        let _ = wire::set_nonblocking(fd, true);
    }
    if flags & libc::SOCK_CLOEXEC == 0 {
        // SAFETY: fcntl on a descriptor we just received.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let real = real!(socket: fn(c_int, c_int, c_int) -> c_int);
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        // SAFETY: libc's own socket(2).
        return unsafe { real(domain, ty, protocol) };
    }
    let Some(_in) = Inside::enter() else {
        // SAFETY: libc's own socket(2).
        return unsafe { real(domain, ty, protocol) };
    };
    let Some(vnet) = default_vnet() else {
        // SAFETY: libc's own socket(2).
        return unsafe { real(domain, ty, protocol) };
    };
    guarded(|| new_socket(&vnet, domain, ty, protocol))
}

/// A socket in `vnet` (any process, with or without `VNET` set).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vnet_socket(
    vnet: *const c_char,
    domain: c_int,
    ty: c_int,
    protocol: c_int,
) -> c_int {
    let _in = Inside::enter();
    guarded(|| {
        if vnet.is_null() || (domain != libc::AF_INET && domain != libc::AF_INET6) {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let v = unsafe { CStr::from_ptr(vnet) }
            .to_str()
            .map_err(|_| libc::EINVAL)?;
        new_socket(v, domain, ty, protocol)
    })
}

/// Moves socket `fd` (not yet bound or connected) to `vnet`; `fd` keeps its
/// number and flags.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vnet_setvnet(fd: c_int, vnet: *const c_char) -> c_int {
    let _in = Inside::enter();
    guarded(|| {
        if vnet.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let v = unsafe { CStr::from_ptr(vnet) }
            .to_str()
            .map_err(|_| libc::EINVAL)?;
        set_vnet(fd, v)
    })
}

fn set_vnet(fd: c_int, vnet: &str) -> Result<c_int, i32> {
    let newfd = match vnet_sock(fd) {
        Some(_) => call(
            &Req::Move {
                vnet: vnet.to_string(),
            },
            Some(fd),
        )?
        .1
        .ok_or(libc::EIO)?,
        None => host_to_vnet(fd, vnet)?,
    };
    replace_fd(&newfd, fd)?;
    vnet_sock(fd).ok_or(libc::EIO)?;
    Ok(0)
}

/// Puts `new` under the program's descriptor number `fd`, keeping its
/// blocking mode and close-on-exec.
fn replace_fd(new: &OwnedFd, fd: c_int) -> Result<(), i32> {
    // SAFETY: fcntl and dup3 on descriptors the program and we hold.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fdfl = libc::fcntl(fd, libc::F_GETFD);
        let cloexec = if fdfl >= 0 && fdfl & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        if libc::dup3(new.as_raw_fd(), fd, cloexec) < 0 {
            return Err(errno());
        }
        if fl >= 0 && fl & libc::O_NONBLOCK != 0 {
            let _ = wire::set_nonblocking(fd, true);
        }
    }
    Ok(())
}

/// A vnet socket to replace host socket `fd` (of the same family and type,
/// not yet bound or connected).
fn host_to_vnet(fd: c_int, vnet: &str) -> Result<OwnedFd, i32> {
    let real = real!(getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int);
    let opt = |name: c_int| -> Result<c_int, i32> {
        let mut v: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as socklen_t;
        // SAFETY: libc's getsockopt into a local int.
        let rc = unsafe {
            real(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 { Err(errno()) } else { Ok(v) }
    };
    let domain = opt(libc::SO_DOMAIN)?;
    let ty = opt(libc::SO_TYPE)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    // SAFETY: sockaddr_storage is plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let gsn = real!(getsockname: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int);
    // SAFETY: libc's getsockname into a local buffer.
    if unsafe {
        gsn(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } < 0
    {
        return Err(errno());
    }
    // SAFETY: the kernel wrote `len` bytes of an address of `domain`.
    if let Ok(Some(a)) = unsafe { read_addr((&ss as *const libc::sockaddr_storage).cast(), len) }
        && a.port() != 0
    {
        return Err(libc::EISCONN);
    }
    let n = new_socket(vnet, domain, ty | libc::SOCK_CLOEXEC, 0)?;
    // SAFETY: `n` was just received and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Writes the name of `fd`'s vnet into `buf` (NUL-terminated).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vnet_getvnet(fd: c_int, buf: *mut c_char, len: usize) -> c_int {
    let _in = Inside::enter();
    guarded(|| {
        vnet_sock(fd).ok_or(libc::ENOTSOCK)?;
        let (r, _) = call(&Req::Info, Some(fd))?;
        let name = CString::new(r.vnet.unwrap_or_default()).map_err(|_| libc::EIO)?;
        let b = name.as_bytes_with_nul();
        if buf.is_null() || b.len() > len {
            return Err(libc::ERANGE);
        }
        // SAFETY: the caller gives `len` writable bytes at `buf`.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr().cast::<c_char>(), buf, b.len()) };
        Ok(0)
    })
}

// ---------------------------------------------------------------------------
// Socket calls.

/// Runs `f` for a vnet socket, or `fallback` (libc) for anything else.
fn on_vnet<R: From<i8>>(
    fd: c_int,
    fallback: impl FnOnce() -> R,
    f: impl FnOnce(SockName) -> Result<R, i32>,
) -> R {
    let Some(_in) = Inside::enter() else {
        return fallback();
    };
    if kind_of(fd) == OTHER {
        return fallback();
    }
    match vnet_sock(fd) {
        Some(n) => guarded(|| f(n)),
        None => fallback(),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = real!(bind: fn(c_int, *const sockaddr, socklen_t) -> c_int);
    // SAFETY: libc's own bind(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, addr, len) },
        |_| {
            // SAFETY: the caller gives `len` bytes at `addr`.
            let a = unsafe { read_addr(addr, len) }?.ok_or(libc::EAFNOSUPPORT)?;
            call(&Req::Bind { addr: a }, Some(fd)).map(|_| 0)
        },
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let real = real!(listen: fn(c_int, c_int) -> c_int);
    // SAFETY: libc's own listen(2).
    on_vnet(
        fd,
        || unsafe { real(fd, backlog) },
        |n| {
            if n.kind != Kind::Tcp {
                return Err(libc::EOPNOTSUPP);
            }
            let backlog = if backlog <= 0 { 128 } else { backlog as u32 };
            call(&Req::Listen { backlog }, Some(fd))?;
            set_kind(fd, LISTENER);
            Ok(0)
        },
    )
}

fn is_nonblocking(fd: c_int) -> bool {
    // SAFETY: fcntl(F_GETFL) on the caller's descriptor.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = real!(connect: fn(c_int, *const sockaddr, socklen_t) -> c_int);
    // SAFETY: libc's own connect(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, addr, len) },
        |_| {
            // SAFETY: the caller gives `len` bytes at `addr`.
            let a = unsafe { read_addr(addr, len) }?.ok_or(libc::EAFNOSUPPORT)?;
            let wait = !is_nonblocking(fd);
            call(&Req::Connect { addr: a, wait }, Some(fd)).map(|_| 0)
        },
    )
}

/// Whether `fd` (a vnet TCP socket) listens: the cache, else the server.
fn listening(fd: c_int) -> Result<bool, i32> {
    if kind_of(fd) == LISTENER {
        return Ok(true);
    }
    let (r, _) = call(&Req::Info, Some(fd))?;
    if r.listening {
        set_kind(fd, LISTENER);
    }
    Ok(r.listening)
}

/// Puts, under listener `fd` whose vnet is gone, a listening Unix socket
/// that no one can reach: the descriptor stops being readable (an event
/// loop would otherwise call `accept` on its end of stream forever), keeps
/// its number, blocking mode and close-on-exec, and blocks in `accept` as a
/// listener that gets no connections does.
fn park_dead_listener(fd: c_int) -> Result<(), i32> {
    let real = real!(socket: fn(c_int, c_int, c_int) -> c_int);
    // SAFETY: libc's own socket(2); the result is checked before it is
    // owned.
    let s = unsafe { real(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(errno());
    }
    // SAFETY: `s` was just made and is owned here only.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let sa = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    // SAFETY: an address of only a family autobinds to a fresh abstract
    // name; then listen(2) on the socket made here.
    unsafe {
        let bound = libc::bind(
            s.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sa_family_t>() as socklen_t,
        );
        if bound < 0 || libc::listen(s.as_raw_fd(), 1) < 0 {
            return Err(errno());
        }
    }
    replace_fd(&s, fd)?;
    set_kind(fd, OTHER);
    Ok(())
}

fn do_accept(
    fd: c_int,
    name: SockName,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Result<c_int, i32> {
    if name.kind != Kind::Tcp {
        return Err(libc::EOPNOTSUPP);
    }
    if !listening(fd)? {
        return Err(libc::EINVAL);
    }
    let mut rec = [0u8; ADDR_LEN];
    let (n, got) = wire::recv_with_fd(fd, &mut rec, libc::MSG_WAITALL)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let Some(newfd) = got else {
        if n != 0 {
            return Err(libc::EPROTO);
        }
        // End of stream: the listener's vnet was destroyed (or vnetd
        // stopped). No connection will ever come; say so the quiet way.
        park_dead_listener(fd)?;
        if is_nonblocking(fd) {
            return Err(libc::EAGAIN);
        }
        let real = real!(accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int);
        // SAFETY: blocks in libc's accept4 on the parked listener.
        let r = unsafe { real(fd, addr, len, flags) };
        return if r < 0 { Err(errno()) } else { Ok(r) };
    };
    let peer = wire::decode_addr(&rec[..n])
        .ok()
        .flatten()
        .ok_or(libc::EPROTO)?;
    let newfd = newfd.into_raw_fd();
    finish_fd(newfd, flags);
    set_kind(newfd, TCP);
    // SAFETY: the caller gives `*len` writable bytes at `addr` (or nulls).
    unsafe { write_addr(peer, name.v6, addr, len) };
    Ok(newfd)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let real = real!(accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int);
    // SAFETY: libc's own accept(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, addr, len) },
        |n| do_accept(fd, n, addr, len, 0),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let real = real!(accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int);
    // SAFETY: libc's own accept4(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, addr, len, flags) },
        |n| do_accept(fd, n, addr, len, flags),
    )
}

type NameFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;

/// `getsockname` and `getpeername`: the address the server gives for
/// `req`, written as the socket's family has it; libc's `real` for other
/// descriptors.
unsafe fn name_call(
    fd: c_int,
    req: Req,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    real: NameFn,
) -> c_int {
    // SAFETY: libc's own call with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, addr, len) },
        |n| {
            let (r, _) = call(&req, Some(fd))?;
            // SAFETY: the caller gives `*len` writable bytes at `addr`.
            unsafe { write_addr(r.addr.ok_or(libc::EIO)?, n.v6, addr, len) };
            Ok(0)
        },
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let real = real!(getsockname: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int);
    // SAFETY: the caller's arguments, to libc's own getsockname(2) or ours.
    unsafe { name_call(fd, Req::LocalAddr, addr, len, real) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let real = real!(getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int);
    // SAFETY: the caller's arguments, to libc's own getpeername(2) or ours.
    unsafe { name_call(fd, Req::PeerAddr, addr, len, real) }
}

/// The option the server keeps for (`level`, `name`), if it keeps it.
fn kept_opt(level: c_int, name: c_int) -> Option<Opt> {
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => Some(Opt::ReuseAddr),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => Some(Opt::ReusePort),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => Some(Opt::KeepAlive),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => Some(Opt::NoDelay),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => Some(Opt::V6Only),
        _ => None,
    }
}

unsafe fn put_int(val: *mut c_void, len: *mut socklen_t, v: c_int) -> Result<c_int, i32> {
    if val.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller gives `*len` writable bytes at `val`.
    unsafe {
        let b = v.to_ne_bytes();
        let n = (*len as usize).min(b.len());
        std::ptr::copy_nonoverlapping(b.as_ptr(), val.cast::<u8>(), n);
        *len = n as socklen_t;
    }
    Ok(0)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let real = real!(getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int);
    // SAFETY: libc's own getsockopt(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, level, name, val, len) },
        |n| {
            if let Some(opt) = kept_opt(level, name) {
                let (r, _) = call(&Req::GetOpt { opt }, Some(fd))?;
                // SAFETY: the caller's buffer.
                return unsafe { put_int(val, len, r.val as c_int) };
            }
            let int = |v: c_int| {
                // SAFETY: the caller's buffer.
                unsafe { put_int(val, len, v) }
            };
            match (level, name) {
                (libc::SOL_SOCKET, libc::SO_ERROR) => {
                    // A connect in progress is waited for: the descriptor was
                    // writable before the connection was made.
                    let (r, _) = call(&Req::Error { wait: true }, Some(fd))?;
                    int(r.val as c_int)
                }
                (libc::SOL_SOCKET, libc::SO_TYPE) => int(if n.kind == Kind::Tcp {
                    libc::SOCK_STREAM
                } else {
                    libc::SOCK_DGRAM
                }),
                (libc::SOL_SOCKET, libc::SO_DOMAIN) => {
                    int(if n.v6 { libc::AF_INET6 } else { libc::AF_INET })
                }
                (libc::SOL_SOCKET, libc::SO_PROTOCOL) => int(match (n.kind, n.v6) {
                    (Kind::Tcp, _) => libc::IPPROTO_TCP,
                    (Kind::Udp, _) => libc::IPPROTO_UDP,
                    (Kind::Icmp, false) => libc::IPPROTO_ICMP,
                    (Kind::Icmp, true) => libc::IPPROTO_ICMPV6,
                }),
                (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => int(c_int::from(listening(fd)?)),
                // Buffers, timeouts and linger are the descriptor's own.
                (libc::SOL_SOCKET, _) => {
                    // SAFETY: libc's own getsockopt(2) on the caller's arguments.
                    let rc = unsafe { real(fd, level, name, val, len) };
                    if rc < 0 { Err(errno()) } else { Ok(rc) }
                }
                (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => int(1460),
                (libc::IPPROTO_TCP, libc::TCP_INFO) => {
                    // No kernel TCP here: an empty record, as a fresh socket's.
                    if val.is_null() || len.is_null() {
                        return Err(libc::EFAULT);
                    }
                    // SAFETY: the caller gives `*len` writable bytes at `val`.
                    unsafe { std::ptr::write_bytes(val.cast::<u8>(), 0, *len as usize) };
                    Ok(0)
                }
                (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                    let name = b"cubic\0";
                    if val.is_null() || len.is_null() {
                        return Err(libc::EFAULT);
                    }
                    // SAFETY: the caller gives `*len` writable bytes at `val`.
                    unsafe {
                        let n = (*len as usize).min(name.len());
                        std::ptr::copy_nonoverlapping(name.as_ptr(), val.cast::<u8>(), n);
                        *len = n as socklen_t;
                    }
                    Ok(0)
                }
                (SOL_VNET, SO_VNET) => {
                    let (r, _) = call(&Req::Info, Some(fd))?;
                    let v = CString::new(r.vnet.unwrap_or_default()).map_err(|_| libc::EIO)?;
                    let b = v.as_bytes_with_nul();
                    if val.is_null() || len.is_null() {
                        return Err(libc::EFAULT);
                    }
                    // SAFETY: the caller gives `*len` writable bytes at `val`.
                    unsafe {
                        if (*len as usize) < b.len() {
                            return Err(libc::ERANGE);
                        }
                        std::ptr::copy_nonoverlapping(b.as_ptr(), val.cast::<u8>(), b.len());
                        *len = b.len() as socklen_t;
                    }
                    Ok(0)
                }
                _ => Err(libc::ENOPROTOOPT),
            }
        },
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let real = real!(setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int);
    if level == SOL_VNET && name == SO_VNET {
        // Any socket, host or vnet, may be moved (as SO_SETFIB).
        let _in = Inside::enter();
        return guarded(|| {
            if val.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: the caller gives `len` readable bytes at `val`.
            let b = unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len as usize) };
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            let v = std::str::from_utf8(&b[..end]).map_err(|_| libc::EINVAL)?;
            set_vnet(fd, v)
        });
    }
    // SAFETY: libc's own setsockopt(2) with the caller's arguments.
    on_vnet(
        fd,
        || unsafe { real(fd, level, name, val, len) },
        |_| {
            if let Some(opt) = kept_opt(level, name) {
                if val.is_null() || (len as usize) < std::mem::size_of::<c_int>() {
                    return Err(libc::EINVAL);
                }
                // SAFETY: at least an int's bytes at `val`.
                let v = unsafe { std::ptr::read_unaligned(val.cast::<c_int>()) };
                call(
                    &Req::SetOpt {
                        opt,
                        val: i64::from(v),
                    },
                    Some(fd),
                )?;
                return Ok(0);
            }
            match level {
                // Buffers, timeouts and linger act on the descriptor itself.
                libc::SOL_SOCKET => {
                    // SAFETY: libc's own setsockopt(2) on the caller's arguments.
                    let rc = unsafe { real(fd, level, name, val, len) };
                    if rc < 0 { Err(errno()) } else { Ok(rc) }
                }
                // Tuning the stack does not offer per socket (TOS, TTL, keepalive
                // timers, congestion control): accepted and ignored, as a
                // program expects them to succeed.
                libc::IPPROTO_IP | libc::IPPROTO_IPV6 | libc::IPPROTO_TCP | libc::IPPROTO_UDP => {
                    Ok(0)
                }
                _ => Err(libc::ENOPROTOOPT),
            }
        },
    )
}

// ---------------------------------------------------------------------------
// UDP data: each datagram on the pair carries an address header.

/// Sends `iov` as one datagram to `to` (or the connected peer).
fn udp_send(
    fd: c_int,
    n: SockName,
    iov: &[libc::iovec],
    to: Option<SocketAddr>,
    flags: c_int,
) -> Result<ssize_t, i32> {
    if let Some(a) = to
        && !n.v6
        && a.is_ipv6()
    {
        return Err(libc::EAFNOSUPPORT);
    }
    let hdr = wire::encode_addr(to);
    let mut v = Vec::with_capacity(iov.len() + 1);
    v.push(libc::iovec {
        iov_base: hdr.as_ptr() as *mut c_void,
        iov_len: ADDR_LEN,
    });
    v.extend_from_slice(iov);
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = v.as_mut_ptr();
    msg.msg_iovlen = v.len() as _;
    let real = real!(sendmsg: fn(c_int, *const libc::msghdr, c_int) -> ssize_t);
    let f = flags & (libc::MSG_DONTWAIT) | libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points to live buffers for the call.
    let r = unsafe { real(fd, &msg, f) };
    if r < 0 {
        return Err(match errno() {
            // The server dropped the socket (its vnet is gone).
            libc::EPIPE | libc::ECONNRESET => libc::ENETDOWN,
            e => e,
        });
    }
    Ok((r as usize).saturating_sub(ADDR_LEN) as ssize_t)
}

/// Receives one datagram into `iov`; returns its length and source.
fn udp_recv(
    fd: c_int,
    iov: &[libc::iovec],
    flags: c_int,
) -> Result<(ssize_t, Option<SocketAddr>, c_int), i32> {
    if flags & libc::MSG_ERRQUEUE != 0 {
        // No ICMP errors are queued for our sockets (IP_RECVERR is
        // accepted and has nothing to report).
        return Err(libc::EAGAIN);
    }
    let mut hdr = [0u8; ADDR_LEN];
    let mut v = Vec::with_capacity(iov.len() + 1);
    v.push(libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: ADDR_LEN,
    });
    v.extend_from_slice(iov);
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = v.as_mut_ptr();
    msg.msg_iovlen = v.len() as _;
    let real = real!(recvmsg: fn(c_int, *mut libc::msghdr, c_int) -> ssize_t);
    let f = flags & (libc::MSG_DONTWAIT | libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_WAITALL);
    // SAFETY: `msg` points to live buffers for the call.
    let r = unsafe { real(fd, &mut msg, f) };
    if r < 0 {
        return Err(errno());
    }
    if r == 0 {
        // The server's end is gone: the vnet was destroyed.
        return Err(libc::ENETDOWN);
    }
    let from = wire::decode_addr(&hdr).ok().flatten();
    Ok((
        (r as usize).saturating_sub(ADDR_LEN) as ssize_t,
        from,
        msg.msg_flags,
    ))
}

/// For a datagram call on `fd`: this thread inside our code and the vnet
/// datagram socket `fd` is, or `None` to hand the call to libc.
fn dgram_call(fd: c_int) -> Option<(Inside, SockName)> {
    if !maybe_udp(fd) {
        return None;
    }
    let g = Inside::enter()?;
    let n = udp_target(fd)?;
    Some((g, n))
}

fn udp_target(fd: c_int) -> Option<SockName> {
    if !maybe_udp(fd) {
        return None;
    }
    vnet_sock(fd).filter(|n| n.kind != Kind::Tcp)
}

fn to_ssize(r: Result<ssize_t, i32>) -> ssize_t {
    match r {
        Ok(n) => n,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    to: *const sockaddr,
    tolen: socklen_t,
) -> ssize_t {
    let real = real!(sendto: fn(c_int, *const c_void, usize, c_int, *const sockaddr, socklen_t) -> ssize_t);
    on_vnet(
        fd,
        // SAFETY: libc's own sendto(2) with the caller's arguments.
        || unsafe { real(fd, buf, len, flags, to, tolen) },
        |n| {
            if n.kind == Kind::Tcp {
                // The address of a connected stream is ignored.
                // SAFETY: libc's own sendto(2) without the address.
                let r = unsafe { real(fd, buf, len, flags, std::ptr::null(), 0) };
                return if r < 0 { Err(errno()) } else { Ok(r) };
            }
            let dst = if to.is_null() {
                None
            } else {
                // SAFETY: the caller gives `tolen` bytes at `to`.
                unsafe { read_addr(to, tolen) }?
            };
            let iov = [libc::iovec {
                iov_base: buf as *mut c_void,
                iov_len: len,
            }];
            udp_send(fd, n, &iov, dst, flags)
        },
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> ssize_t {
    let real = real!(send: fn(c_int, *const c_void, usize, c_int) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own send(2) with the caller's arguments.
        return unsafe { real(fd, buf, len, flags) };
    }
    // SAFETY: forwards the caller's arguments.
    unsafe { sendto(fd, buf, len, flags, std::ptr::null(), 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
    let real = real!(sendmsg: fn(c_int, *const libc::msghdr, c_int) -> ssize_t);
    let Some((_in, n)) = dgram_call(fd).filter(|_| !msg.is_null()) else {
        // SAFETY: libc's own sendmsg(2) with the caller's arguments.
        return unsafe { real(fd, msg, flags) };
    };
    to_ssize(
        std::panic::catch_unwind(|| {
            // SAFETY: the caller's msghdr and the buffers it names.
            let m = unsafe { &*msg };
            let dst = if m.msg_name.is_null() {
                None
            } else {
                // SAFETY: the caller gives `msg_namelen` bytes at `msg_name`.
                unsafe { read_addr(m.msg_name.cast(), m.msg_namelen) }?
            };
            // SAFETY: `msg_iovlen` iovecs at `msg_iov`.
            // (msg_iovlen is size_t in glibc, int in musl.)
            #[allow(clippy::unnecessary_cast)]
            let iov = unsafe { iov_slice(m.msg_iov, m.msg_iovlen as usize) };
            udp_send(fd, n, iov, dst, flags)
        })
        .unwrap_or(Err(libc::EIO)),
    )
}

unsafe fn iov_slice<'a>(p: *const libc::iovec, n: usize) -> &'a [libc::iovec] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: the caller gives `n` iovecs at `p`.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    from: *mut sockaddr,
    fromlen: *mut socklen_t,
) -> ssize_t {
    let real = real!(recvfrom: fn(c_int, *mut c_void, usize, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t);
    on_vnet(
        fd,
        // SAFETY: libc's own recvfrom(2) with the caller's arguments.
        || unsafe { real(fd, buf, len, flags, from, fromlen) },
        |n| {
            if n.kind == Kind::Tcp {
                // A stream reports no source address.
                if !fromlen.is_null() {
                    // SAFETY: the caller's length.
                    unsafe { *fromlen = 0 };
                }
                // SAFETY: libc's own recvfrom(2) without the address.
                let r = unsafe {
                    real(
                        fd,
                        buf,
                        len,
                        flags,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                return if r < 0 { Err(errno()) } else { Ok(r) };
            }
            let iov = [libc::iovec {
                iov_base: buf,
                iov_len: len,
            }];
            let (r, src, _) = udp_recv(fd, &iov, flags)?;
            if let Some(a) = src {
                // SAFETY: the caller gives `*fromlen` writable bytes.
                unsafe { write_addr(a, n.v6, from, fromlen) };
            }
            Ok(r)
        },
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> ssize_t {
    let real = real!(recv: fn(c_int, *mut c_void, usize, c_int) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own recv(2) with the caller's arguments.
        return unsafe { real(fd, buf, len, flags) };
    }
    // SAFETY: forwards the caller's arguments.
    unsafe {
        recvfrom(
            fd,
            buf,
            len,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    let real = real!(recvmsg: fn(c_int, *mut libc::msghdr, c_int) -> ssize_t);
    let Some((_in, n)) = dgram_call(fd).filter(|_| !msg.is_null()) else {
        // SAFETY: libc's own recvmsg(2) with the caller's arguments.
        return unsafe { real(fd, msg, flags) };
    };
    to_ssize(
        std::panic::catch_unwind(|| {
            // SAFETY: the caller's msghdr and the buffers it names.
            let m = unsafe { &mut *msg };
            // SAFETY: `msg_iovlen` iovecs at `msg_iov`.
            // (msg_iovlen is size_t in glibc, int in musl.)
            #[allow(clippy::unnecessary_cast)]
            let iov = unsafe { iov_slice(m.msg_iov, m.msg_iovlen as usize) };
            let (r, src, fl) = udp_recv(fd, iov, flags)?;
            if !m.msg_name.is_null() {
                match src {
                    Some(a) => {
                        // SAFETY: the caller gives `msg_namelen` writable bytes.
                        unsafe { write_addr(a, n.v6, m.msg_name.cast(), &mut m.msg_namelen) };
                    }
                    None => m.msg_namelen = 0,
                }
            }
            m.msg_controllen = 0;
            m.msg_flags = fl;
            Ok(r)
        })
        .unwrap_or(Err(libc::EIO)),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: usize) -> ssize_t {
    let real = real!(read: fn(c_int, *mut c_void, usize) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own read(2) with the caller's arguments.
        return unsafe { real(fd, buf, len) };
    }
    // SAFETY: forwards the caller's arguments.
    unsafe { recvfrom(fd, buf, len, 0, std::ptr::null_mut(), std::ptr::null_mut()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: usize) -> ssize_t {
    let real = real!(write: fn(c_int, *const c_void, usize) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own write(2) with the caller's arguments.
        return unsafe { real(fd, buf, len) };
    }
    // SAFETY: forwards the caller's arguments.
    unsafe { sendto(fd, buf, len, 0, std::ptr::null(), 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    _buflen: usize,
) -> ssize_t {
    // SAFETY: forwards the caller's arguments.
    unsafe { read(fd, buf, len) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    _buflen: usize,
    flags: c_int,
) -> ssize_t {
    // SAFETY: forwards the caller's arguments.
    unsafe { recv(fd, buf, len, flags) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    _buflen: usize,
    flags: c_int,
    from: *mut sockaddr,
    fromlen: *mut socklen_t,
) -> ssize_t {
    // SAFETY: forwards the caller's arguments.
    unsafe { recvfrom(fd, buf, len, flags, from, fromlen) }
}

/// A message header naming `n` buffers at `iov` and nothing else.
fn iov_msg(iov: *const libc::iovec, n: c_int) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zero is valid.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov as *mut libc::iovec;
    m.msg_iovlen = n.max(0) as _;
    m
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let real = real!(readv: fn(c_int, *const libc::iovec, c_int) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own readv(2) with the caller's arguments.
        return unsafe { real(fd, iov, n) };
    }
    let mut m = iov_msg(iov, n);
    // SAFETY: forwards the caller's buffers.
    unsafe { recvmsg(fd, &mut m, 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let real = real!(writev: fn(c_int, *const libc::iovec, c_int) -> ssize_t);
    if !maybe_udp(fd) {
        // SAFETY: libc's own writev(2) with the caller's arguments.
        return unsafe { real(fd, iov, n) };
    }
    let m = iov_msg(iov, n);
    // SAFETY: forwards the caller's buffers.
    unsafe { sendmsg(fd, &m, 0) }
}

// ---------------------------------------------------------------------------
// Keeping the descriptor cache true.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let real = real!(close: fn(c_int) -> c_int);
    set_kind(fd, UNKNOWN);
    // SAFETY: libc's own close(2).
    unsafe { real(fd) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let real = real!(dup: fn(c_int) -> c_int);
    // SAFETY: libc's own dup(2).
    let n = unsafe { real(fd) };
    if n >= 0 {
        set_kind(n, kind_of(fd));
    }
    n
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    let real = real!(dup2: fn(c_int, c_int) -> c_int);
    // SAFETY: libc's own dup2(2).
    let n = unsafe { real(fd, to) };
    if n >= 0 && fd != to {
        set_kind(n, kind_of(fd));
    }
    n
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    let real = real!(dup3: fn(c_int, c_int, c_int) -> c_int);
    // SAFETY: libc's own dup3(2).
    let n = unsafe { real(fd, to, flags) };
    if n >= 0 {
        set_kind(n, kind_of(fd));
    }
    n
}

// ---------------------------------------------------------------------------
// Names: resolved in the vnet, never by the host.

/// The addresses of `node` in the default vnet (IPv4 and/or IPv6 as
/// asked): `None` when the process has no vnet or `node` is numeric (libc
/// answers those itself).
fn vnet_lookup(node: &str, v4: bool, v6: bool) -> Option<Result<Vec<IpAddr>, i32>> {
    let vnet = default_vnet()?;
    if node.parse::<IpAddr>().is_ok() {
        return None;
    }
    let errno = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => libc::ENOENT,
        std::io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        _ => e.raw_os_error().unwrap_or(libc::EIO),
    };
    let path = vnet::sockets::client::default_path();
    Some(
        vnet::sockets::client::Net::open_at(&path, &vnet)
            .and_then(|net| vnet::sockets::resolve::lookup(&net, node, v4, v6))
            .map_err(errno),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    let real = real!(getaddrinfo: fn(*const c_char, *const c_char, *const libc::addrinfo, *mut *mut libc::addrinfo) -> c_int);
    let Some(_in) = Inside::enter() else {
        // SAFETY: libc's own getaddrinfo with the caller's arguments.
        return unsafe { real(node, service, hints, res) };
    };
    if default_vnet().is_none() {
        // SAFETY: as above.
        return unsafe { real(node, service, hints, res) };
    }
    // The host's interfaces say nothing about the vnet's: never filter by
    // them (AI_ADDRCONFIG).
    // SAFETY: addrinfo is plain data; zero is valid.
    let mut h: libc::addrinfo = if hints.is_null() {
        unsafe { std::mem::zeroed() }
    } else {
        unsafe { std::ptr::read(hints) }
    };
    h.ai_flags &= !libc::AI_ADDRCONFIG;
    let name = if node.is_null() {
        None
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(node) }.to_str().ok()
    };
    let (v4, v6) = match h.ai_family {
        libc::AF_INET => (true, false),
        libc::AF_INET6 => (false, true),
        _ => (true, true),
    };
    let Some(Some(found)) = name.map(|n| vnet_lookup(n, v4, v6)) else {
        // No name, or a numeric one: libc resolves without asking anyone.
        // SAFETY: libc's own getaddrinfo with our copy of the hints.
        return unsafe { real(node, service, &h, res) };
    };
    if h.ai_flags & libc::AI_NUMERICHOST != 0 {
        return libc::EAI_NONAME;
    }
    let addrs = match found {
        Ok(a) => a,
        Err(libc::ENOENT) => return libc::EAI_NONAME,
        Err(libc::ETIMEDOUT) => return libc::EAI_AGAIN,
        Err(e) => {
            set_errno(e);
            return libc::EAI_SYSTEM;
        }
    };
    // Each address through libc as a numeric host, so that the service,
    // family and socket type are handled exactly as libc does; the lists
    // are chained into one that freeaddrinfo releases.
    h.ai_flags |= libc::AI_NUMERICHOST;
    h.ai_flags &= !libc::AI_CANONNAME;
    let mut head: *mut libc::addrinfo = std::ptr::null_mut();
    let mut tail: *mut libc::addrinfo = std::ptr::null_mut();
    let mut last_err = libc::EAI_NONAME;
    for a in addrs {
        let Ok(s) = CString::new(a.to_string()) else {
            continue;
        };
        let mut one: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: libc's own getaddrinfo on a numeric host.
        let rc = unsafe { real(s.as_ptr(), service, &h, &mut one) };
        if rc != 0 {
            last_err = rc;
            continue;
        }
        if head.is_null() {
            head = one;
        } else {
            // SAFETY: `tail` is the last node of the list built so far.
            unsafe { (*tail).ai_next = one };
        }
        tail = one;
        // SAFETY: walks the list libc just returned.
        unsafe {
            while !(*tail).ai_next.is_null() {
                tail = (*tail).ai_next;
            }
        }
    }
    if head.is_null() {
        return last_err;
    }
    // SAFETY: the caller's result pointer.
    unsafe { *res = head };
    0
}

struct HostEnt {
    ent: libc::hostent,
    name: CString,
    addrs: Vec<[u8; 16]>,
    ptrs: Vec<*mut c_char>,
    aliases: [*mut c_char; 1],
}

thread_local! {
    static HOSTENT: RefCell<Option<Box<HostEnt>>> = const { RefCell::new(None) };
}

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn set_h_errno(e: c_int) {
    // SAFETY: glibc's h_errno of this thread.
    unsafe { *__h_errno_location() = e };
}

fn hostent_for(name: &str, family: c_int) -> *mut libc::hostent {
    let found = match vnet_lookup(name, family != libc::AF_INET6, family == libc::AF_INET6) {
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            set_h_errno(1); // HOST_NOT_FOUND
            return std::ptr::null_mut();
        }
        None => match name.parse::<IpAddr>() {
            Ok(a) => vec![a],
            Err(_) => return std::ptr::null_mut(),
        },
    };
    let (len, addrs): (usize, Vec<[u8; 16]>) = if family == libc::AF_INET6 {
        (
            16,
            found
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v6) => Some(v6.octets()),
                    _ => None,
                })
                .collect(),
        )
    } else {
        (
            4,
            found
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => {
                        let mut b = [0u8; 16];
                        b[..4].copy_from_slice(&v4.octets());
                        Some(b)
                    }
                    _ => None,
                })
                .collect(),
        )
    };
    if addrs.is_empty() {
        set_h_errno(4); // NO_DATA
        return std::ptr::null_mut();
    }
    let Ok(cname) = CString::new(name) else {
        return std::ptr::null_mut();
    };
    let mut h = Box::new(HostEnt {
        // SAFETY: hostent is plain data; zero is valid; filled below.
        ent: unsafe { std::mem::zeroed() },
        name: cname,
        addrs,
        ptrs: Vec::new(),
        aliases: [std::ptr::null_mut()],
    });
    let mut ptrs: Vec<*mut c_char> = h
        .addrs
        .iter_mut()
        .map(|a| a.as_mut_ptr().cast::<c_char>())
        .collect();
    ptrs.push(std::ptr::null_mut());
    h.ptrs = ptrs;
    h.ent.h_name = h.name.as_ptr() as *mut c_char;
    h.ent.h_aliases = h.aliases.as_mut_ptr();
    h.ent.h_addrtype = family;
    h.ent.h_length = len as c_int;
    h.ent.h_addr_list = h.ptrs.as_mut_ptr();
    HOSTENT
        .try_with(|slot| {
            let p: *mut libc::hostent = &mut h.ent;
            *slot.borrow_mut() = Some(h);
            p
        })
        .unwrap_or(std::ptr::null_mut())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut libc::hostent {
    // SAFETY: forwards the caller's argument.
    unsafe { gethostbyname2(name, libc::AF_INET) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, family: c_int) -> *mut libc::hostent {
    let real = real!(gethostbyname2: fn(*const c_char, c_int) -> *mut libc::hostent);
    let Some(_in) = Inside::enter() else {
        // SAFETY: libc's own gethostbyname2.
        return unsafe { real(name, family) };
    };
    if default_vnet().is_none() || name.is_null() {
        // SAFETY: as above.
        return unsafe { real(name, family) };
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let Ok(n) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return std::ptr::null_mut();
    };
    std::panic::catch_unwind(|| hostent_for(n, family)).unwrap_or(std::ptr::null_mut())
}

/// Reverse lookups in a vnet never go to the host's resolver: the host part
/// is given as a number (`NI_NAMEREQD` fails, as for an address without a
/// name). Service names come from the local services file, as usual.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let real = real!(getnameinfo: fn(*const sockaddr, socklen_t, *mut c_char, socklen_t, *mut c_char, socklen_t, c_int) -> c_int);
    let in_vnet = Inside::enter().is_some_and(|_in| default_vnet().is_some());
    if !in_vnet || host.is_null() || hostlen == 0 {
        // SAFETY: libc's own getnameinfo with the caller's arguments.
        return unsafe { real(sa, salen, host, hostlen, serv, servlen, flags) };
    }
    if flags & libc::NI_NAMEREQD != 0 {
        return libc::EAI_NONAME;
    }
    // SAFETY: libc's own getnameinfo, numeric host only.
    unsafe {
        real(
            sa,
            salen,
            host,
            hostlen,
            serv,
            servlen,
            flags | libc::NI_NUMERICHOST,
        )
    }
}

/// `gethostbyaddr` in a vnet: no name (the host's resolver is not asked).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
) -> *mut libc::hostent {
    let real = real!(gethostbyaddr: fn(*const c_void, socklen_t, c_int) -> *mut libc::hostent);
    let in_vnet = Inside::enter().is_some_and(|_in| default_vnet().is_some());
    if !in_vnet {
        // SAFETY: libc's own gethostbyaddr with the caller's arguments.
        return unsafe { real(addr, len, ty) };
    }
    set_h_errno(1); // HOST_NOT_FOUND
    std::ptr::null_mut()
}
