//! Name lookups inside a vnet, on the client side: the vnet's hosts entries
//! (asked of vnetd), then its name servers, queried over a UDP socket *of
//! the vnet*, so the query leaves through the vnet's own interfaces and
//! routes, never the host's.
//!
//! The DNS messages are built and read by glibc's resolver library
//! (`res_mkquery`, `ns_initparse`, `ns_parserr`); only the sending is ours.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::client::{Net, UdpSocket};

/// How long one query waits for its answer, and how many times it is sent.
const TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 2;

const C_IN: libc::c_int = 1;
const T_A: libc::c_int = 1;
const T_AAAA: libc::c_int = 28;
const QUERY: libc::c_int = 0;
/// `ns_s_an`, the answer section.
const NS_S_AN: libc::c_int = 1;

/// glibc's `ns_msg` (`<arpa/nameser.h>`).
#[repr(C)]
struct NsMsg {
    msg: *const u8,
    eom: *const u8,
    id: u16,
    flags: u16,
    counts: [u16; 4],
    sections: [*const u8; 4],
    sect: libc::c_int,
    rrnum: libc::c_int,
    msg_ptr: *const u8,
}

/// glibc's `ns_rr`.
#[repr(C)]
struct NsRr {
    name: [libc::c_char; 1025],
    rr_type: u16,
    rr_class: u16,
    ttl: u32,
    rdlength: u16,
    rdata: *const u8,
}

#[link(name = "resolv")]
unsafe extern "C" {
    fn res_mkquery(
        op: libc::c_int,
        dname: *const libc::c_char,
        class: libc::c_int,
        ty: libc::c_int,
        data: *const u8,
        datalen: libc::c_int,
        newrr: *const u8,
        buf: *mut u8,
        buflen: libc::c_int,
    ) -> libc::c_int;
    fn ns_initparse(msg: *const u8, len: libc::c_int, handle: *mut NsMsg) -> libc::c_int;
    fn ns_parserr(
        handle: *mut NsMsg,
        section: libc::c_int,
        rrnum: libc::c_int,
        rr: *mut NsRr,
    ) -> libc::c_int;
}

/// A query for `name` of type `ty`.
fn query(name: &str, ty: libc::c_int) -> io::Result<Vec<u8>> {
    let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; 512];
    // SAFETY: `cname` is NUL-terminated; `buf` has the length passed.
    let n = unsafe {
        res_mkquery(
            QUERY,
            cname.as_ptr(),
            C_IN,
            ty,
            std::ptr::null(),
            0,
            std::ptr::null(),
            buf.as_mut_ptr(),
            buf.len() as libc::c_int,
        )
    };
    if n < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: not a name"),
        ));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// What an answer says: `None` when it is not an answer to `id`, else the
/// addresses (none for NXDOMAIN or no data).
fn answers(msg: &[u8], id: u16) -> Option<Vec<IpAddr>> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return None;
    }
    // SAFETY: NsMsg is plain data; zero is valid before ns_initparse fills it.
    let mut h: NsMsg = unsafe { std::mem::zeroed() };
    // SAFETY: `msg` is valid for its length; `h` is writable.
    if unsafe { ns_initparse(msg.as_ptr(), msg.len() as libc::c_int, &mut h) } < 0 {
        return Some(Vec::new());
    }
    let count = h.counts[NS_S_AN as usize];
    let mut out = Vec::new();
    for i in 0..count {
        // SAFETY: NsRr is plain data; zero is valid before ns_parserr fills it.
        let mut rr: NsRr = unsafe { std::mem::zeroed() };
        // SAFETY: `h` was filled by ns_initparse over `msg`, still alive;
        // `rr` is writable.
        if unsafe { ns_parserr(&mut h, NS_S_AN, libc::c_int::from(i), &mut rr) } < 0 {
            break;
        }
        if rr.rr_class != C_IN as u16 || rr.rdata.is_null() {
            continue;
        }
        // SAFETY: `rdata` points at `rdlength` bytes inside `msg`.
        let data = unsafe { std::slice::from_raw_parts(rr.rdata, usize::from(rr.rdlength)) };
        match (i32::from(rr.rr_type), data.len()) {
            (T_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (T_AAAA, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(o)));
            }
            _ => {}
        }
    }
    Some(out)
}

/// Asks `server` for `name`'s records of type `ty` from `net`'s vnet.
fn ask(net: &Net, server: IpAddr, name: &str, ty: libc::c_int) -> io::Result<Vec<IpAddr>> {
    let q = query(name, ty)?;
    let id = u16::from_be_bytes([q[0], q[1]]);
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(net, any)?;
    let to = SocketAddr::new(server, 53);
    let mut buf = vec![0u8; 4096];
    for _ in 0..ATTEMPTS {
        sock.send_to(&q, to)?;
        let t0 = Instant::now();
        while let Some(left) = TIMEOUT.checked_sub(t0.elapsed()) {
            let mut p = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as libc::c_int) };
            if r <= 0 {
                continue;
            }
            let (n, from) = sock.recv_from(&mut buf)?;
            if from.ip().to_canonical() != server.to_canonical() {
                continue;
            }
            if let Some(a) = answers(&buf[..n], id) {
                return Ok(a);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("name server {server} did not answer"),
    ))
}

/// The addresses of `name` in `net`'s vnet: its hosts entries, else its
/// name servers (IPv4 and/or IPv6 records as asked), trying the search
/// domains for a name without a final dot.
///
/// # Errors
/// `NotFound` when no one knows the name; `TimedOut` when no name server
/// answered.
pub fn lookup(net: &Net, name: &str, v4: bool, v6: bool) -> io::Result<Vec<IpAddr>> {
    let r = net.resolve_entry(name)?;
    if !r.addrs.is_empty() {
        return Ok(r.addrs);
    }
    let mut candidates = vec![name.to_string()];
    if !name.ends_with('.') {
        candidates.extend(r.search.iter().map(|d| format!("{name}.{d}")));
    }
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for cand in candidates {
        for server in &r.nameservers {
            let mut found = Vec::new();
            let mut answered = false;
            for (want, ty) in [(v4, T_A), (v6, T_AAAA)] {
                if !want {
                    continue;
                }
                match ask(net, *server, &cand, ty) {
                    Ok(a) => {
                        answered = true;
                        found.extend(a);
                    }
                    Err(e) => last = e,
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
            if answered {
                // This server says the name has no such records: the next
                // candidate, not the next server.
                last = io::Error::from(io::ErrorKind::NotFound);
                break;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_answers_through_glibc() {
        let q = query("web.lab", T_A).unwrap();
        assert_eq!(&q[4..6], &[0, 1], "one question");
        // An answer: the query with QR set, one A record pointing at the
        // question's name.
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 2]);
        let id = u16::from_be_bytes([q[0], q[1]]);
        assert_eq!(answers(&a, id), Some(vec![IpAddr::from([10, 0, 0, 2])]));
        assert_eq!(
            answers(&a, id.wrapping_add(1)),
            None,
            "another query's answer"
        );
        assert_eq!(answers(&q, id), None, "a query is not an answer");
        assert_eq!(answers(&a[..20], id), Some(vec![]), "truncated");
    }
}
