//! `af_packet` links: a vnet interface attached to an existing host
//! interface (a veth end, a NIC) through an `AF_PACKET` socket in
//! promiscuous mode. The pump is the TAP's ([`super::tap`]).
//!
//! Frames the host itself sends carry transport checksums the NIC was to
//! fill in (`CHECKSUM_PARTIAL`); the kernel says so per frame in
//! `PACKET_AUXDATA`, and such frames get their checksum completed here, as
//! the NIC would have, so the vnet's stack can verify it. Our own frames
//! are not looped back (`PACKET_IGNORE_OUTGOING`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
};

use super::tap::{HostDev, HostIo, TapHandle, start_pump};
use super::wire::Wire;

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [libc::c_uchar; 8],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

struct PacketDev {
    fd: OwnedFd,
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live `T` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open(host: &str) -> io::Result<PacketDev> {
    let cname = CString::new(host)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: reads a NUL-terminated string that lives for the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no such host interface",
        ));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned to us and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: binds to a live sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mreq = PacketMreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: PACKET_MR_PROMISC,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
    setsockopt(
        fd.as_raw_fd(),
        SOL_PACKET,
        PACKET_AUXDATA,
        &1 as &libc::c_int,
    )?;
    setsockopt(
        fd.as_raw_fd(),
        SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )?;
    Ok(PacketDev { fd })
}

/// Completes the TCP or UDP checksum of a frame the host sent with the
/// checksum left to the NIC.
pub(super) fn complete_checksum(frame: &mut [u8]) {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
        return;
    };
    let et = eth.ethertype();
    let l3 = &mut frame[14..];
    let (src, dst, proto, off) = match et {
        EthernetProtocol::Ipv4 => {
            let Ok(p) = Ipv4Packet::new_checked(&*l3) else {
                return;
            };
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                p.next_header(),
                usize::from(p.header_len()),
            )
        }
        EthernetProtocol::Ipv6 => {
            let Ok(p) = Ipv6Packet::new_checked(&*l3) else {
                return;
            };
            (
                IpAddress::Ipv6(p.src_addr()),
                IpAddress::Ipv6(p.dst_addr()),
                p.next_header(),
                40,
            )
        }
        _ => return,
    };
    let l4 = &mut l3[off..];
    match proto {
        IpProtocol::Tcp => {
            if let Ok(mut t) = TcpPacket::new_checked(l4) {
                t.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut u) = UdpPacket::new_checked(l4) {
                u.fill_checksum(&src, &dst);
            }
        }
        _ => {}
    }
}

impl HostDev for PacketDev {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: the iovec and control buffer are live and sized as
        // declared in `msg`.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(buf.len());
        let mut partial = false;
        // SAFETY: walks the control messages the kernel wrote into `cbuf`,
        // with the CMSG macros that bound every step by msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_PACKET
                    && (*c).cmsg_type == PACKET_AUXDATA
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<TpacketAuxdata>() as u32) as usize
                {
                    let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    partial = aux.tp_status & TP_STATUS_CSUMNOTREADY != 0;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if partial {
            complete_checksum(&mut buf[..n]);
        }
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sends from a live buffer of the length passed.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Attaches to host interface `host` and starts its pump between it and the
/// two wires.
///
/// # Errors
/// No such interface, no privilege, or the thread not starting.
pub fn start(
    host: &str,
    to_host: Arc<Wire>,
    from_host: Arc<Wire>,
    io: HostIo,
) -> io::Result<TapHandle> {
    let dev = open(host)?;
    start_pump(Box::new(dev), host.to_string(), to_host, from_host, io)
}
