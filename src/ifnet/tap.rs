//! Host links: a vnet interface joined to a Linux TAP device (this module)
//! or, through an `AF_PACKET` socket, to an existing host interface
//! ([`super::packet`]), so the kernel stack on the other side exchanges
//! real Ethernet frames with the vnet.
//!
//! This is an OS edge: with `packet`, the only place in `ifnet` that
//! touches descriptors. Each host link has a pump thread that waits in
//! `poll(2)` on the device and on an eventfd. Frames from the host are put
//! on the interface's receive wire and the owning vnet is woken through the
//! driver's [`HostIo`] (once per batch); frames the vnet sends land on the
//! transmit wire, whose reader is this pump (told through the eventfd when
//! the queue goes from empty to not), and are written to the device.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use smoltcp::time::Instant;

use super::wire::Wire;
use crate::vnet::VnetId;

/// What a host-side pump needs from the driver: its clock, and a way to
/// wake a vnet that has frames to read.
#[derive(Clone)]
pub struct HostIo {
    /// The driver's clock.
    pub now: Arc<dyn Fn() -> Instant + Send + Sync>,
    /// Asks the driver to poll a vnet at a time.
    pub wake: Arc<dyn Fn(VnetId, Instant) + Send + Sync>,
}

impl std::fmt::Debug for HostIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostIo")
    }
}

/// A host-side frame device the pump drives.
pub(super) trait HostDev: Send + 'static {
    /// The descriptor to poll for input.
    fn fd(&self) -> std::os::fd::RawFd;
    /// Reads one frame (non-blocking: `WouldBlock` when there is none).
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
}

impl HostDev for File {
    fn fd(&self) -> std::os::fd::RawFd {
        self.as_raw_fd()
    }
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.write(frame).map(|_| ())
    }
}

/// Opens (creating if absent) the TAP device `name`, without packet
/// information headers. Returns the descriptor and the name the kernel
/// gave it.
fn open_tap(name: &str) -> io::Result<(File, String)> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    for (d, s) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call
    // on a descriptor we own.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above; the pump never blocks in read.
    if flags < 0
        || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let got: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    // The kernel may hand us checksum-less and large (TSO) frames: one
    // system call per 64 KiB instead of per 1500 bytes.
    let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offload as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((file, String::from_utf8_lossy(&got).into_owned()))
}

/// Size of the `virtio_net_hdr` in front of every frame of a TAP opened
/// with `IFF_VNET_HDR`.
const VNET_HDR: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is not filled in.
const NEEDS_CSUM: u8 = 1;

/// A TAP with virtio-net headers: frames from the kernel may be large
/// (TSO) and lack their transport checksum, which is completed here; frames
/// to the kernel go with an empty header (complete, not segmented).
struct VnetHdrTap {
    file: File,
    scratch: Vec<u8>,
    mtu: Arc<AtomicUsize>,
}

/// `VIRTIO_NET_HDR_GSO_TCPV4` and `_TCPV6`.
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

/// The virtio-net header for a TCP frame larger than `mtu`, asking the
/// kernel to segment it (TSO); its TCP checksum becomes the pseudo-header
/// seed the kernel completes per segment. `None` for any other frame.
fn gso_header(frame: &mut [u8], mtu: usize) -> Option<[u8; VNET_HDR]> {
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    };
    if frame.len() <= 14 + mtu {
        return None;
    }
    let et = EthernetFrame::new_checked(&*frame).ok()?.ethertype();
    let (src, dst, iphl, gso_type, total) = match et {
        EthernetProtocol::Ipv4 => {
            let p = Ipv4Packet::new_checked(&frame[14..]).ok()?;
            (p.next_header() == IpProtocol::Tcp).then_some(())?;
            let hl = usize::from(p.header_len());
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                hl,
                GSO_TCPV4,
                usize::from(p.total_len()),
            )
        }
        EthernetProtocol::Ipv6 => {
            let p = Ipv6Packet::new_checked(&frame[14..]).ok()?;
            (p.next_header() == IpProtocol::Tcp).then_some(())?;
            (
                IpAddress::Ipv6(p.src_addr()),
                IpAddress::Ipv6(p.dst_addr()),
                40,
                GSO_TCPV6,
                40 + usize::from(p.payload_len()),
            )
        }
        _ => return None,
    };
    let seg = frame.get_mut(14 + iphl..14 + total)?;
    let tcphl = usize::from(TcpPacket::new_checked(&*seg).ok()?.header_len());
    let seed =
        smoltcp::wire::checksum::pseudo_header(&src, &dst, IpProtocol::Tcp, seg.len() as u32);
    seg[16..18].copy_from_slice(&seed.to_be_bytes());
    let mut h = [0u8; VNET_HDR];
    h[0] = NEEDS_CSUM;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&((14 + iphl + tcphl) as u16).to_le_bytes());
    h[4..6].copy_from_slice(&((mtu - iphl - tcphl) as u16).to_le_bytes());
    h[6..8].copy_from_slice(&((14 + iphl) as u16).to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    Some(h)
}

impl HostDev for VnetHdrTap {
    fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.scratch.resize(VNET_HDR + buf.len(), 0);
        let n = self.file.read(&mut self.scratch)?;
        if n < VNET_HDR {
            return Ok(0);
        }
        let len = n - VNET_HDR;
        buf[..len].copy_from_slice(&self.scratch[VNET_HDR..n]);
        if self.scratch[0] & NEEDS_CSUM != 0 {
            super::packet::complete_checksum(&mut buf[..len]);
        }
        Ok(len)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let mtu = self.mtu.load(Ordering::Relaxed);
        if frame.len() > 14 + mtu {
            let mut big = frame.to_vec();
            if let Some(h) = gso_header(&mut big, mtu) {
                let iov = [io::IoSlice::new(&h), io::IoSlice::new(&big)];
                return self.file.write_vectored(&iov).map(|_| ());
            }
        }
        let hdr = [0u8; VNET_HDR];
        let iov = [io::IoSlice::new(&hdr), io::IoSlice::new(frame)];
        self.file.write_vectored(&iov).map(|_| ())
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an eventfd we hold.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live buffer.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
}

/// The running pump of one host link; dropping it stops the thread and
/// closes the device (a TAP vnetd created disappears with it).
pub struct TapHandle {
    host: String,
    /// The interface's MTU as the pump sees it (TAPs only: it decides
    /// which frames go to the kernel for segmentation).
    mtu: Option<Arc<AtomicUsize>>,
    stop: Arc<AtomicBool>,
    kick: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapHandle")
            .field("host", &self.host)
            .finish()
    }
}

impl TapHandle {
    /// The host-side interface name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Tells the pump the interface's MTU.
    pub fn set_mtu(&self, mtu: usize) {
        if let Some(m) = &self.mtu {
            m.store(mtu, Ordering::Relaxed);
        }
    }
}

impl Drop for TapHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        signal(&self.kick);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens TAP `host` and starts its pump between the device and the two
/// wires: `to_host` (read by the pump) and `from_host` (read by the vnet
/// `owner`).
///
/// # Errors
/// Opening the device or starting the thread.
pub fn start(
    host: &str,
    to_host: Arc<Wire>,
    from_host: Arc<Wire>,
    io: HostIo,
) -> io::Result<TapHandle> {
    let (file, name) = open_tap(host)?;
    let mtu = Arc::new(AtomicUsize::new(1500));
    let dev = VnetHdrTap {
        file,
        scratch: Vec::new(),
        mtu: Arc::clone(&mtu),
    };
    let mut h = start_pump(Box::new(dev), name, to_host, from_host, io)?;
    h.mtu = Some(mtu);
    Ok(h)
}

/// Starts a pump for any host device.
pub(super) fn start_pump(
    dev: Box<dyn HostDev>,
    name: String,
    to_host: Arc<Wire>,
    from_host: Arc<Wire>,
    io: HostIo,
) -> io::Result<TapHandle> {
    let kick = Arc::new(eventfd()?);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let kick = Arc::clone(&kick);
        to_host.set_host_rx(Arc::new(move || signal(&kick)));
    }
    let (k2, s2) = (Arc::clone(&kick), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name(format!("host-{name}"))
        .spawn(move || pump(dev, &k2, &s2, &to_host, &from_host, &io))?;
    Ok(TapHandle {
        host: name,
        mtu: None,
        stop,
        kick,
        thread: Some(thread),
    })
}

fn pump(
    mut tap: Box<dyn HostDev>,
    kick: &OwnedFd,
    stop: &AtomicBool,
    to_host: &Wire,
    from_host: &Wire,
    io: &HostIo,
) {
    let mut buf = vec![0u8; 65536 + 64];
    let mut out = Vec::new();
    // Set when the device reported end of stream (an uplink's peer
    // closed): it is polled no more, only the stop signal is.
    let mut ended = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: if ended { -1 } else { tap.fd() },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: kick.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two descriptors we hold, described by a live array.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            log::warn!("tap pump: poll failed: {}", io::Error::last_os_error());
            return;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if fds[1].revents != 0 {
            drain(kick);
        }
        // The vnet's frames to the host.
        to_host.recv_due(Instant::from_micros(i64::MAX / 2), &mut out);
        for f in out.drain(..) {
            // A TAP whose host side is down refuses writes: the frame is
            // lost, as on a cable with nobody at the other end.
            let _ = tap.write_frame(&f);
        }
        // The host's frames to the vnet.
        if fds[0].revents & libc::POLLIN != 0 {
            let now = (io.now)();
            // Wake each vnet once per batch (a frame into a switch may be
            // for several), and every 64 frames so that they start on a
            // long burst early.
            let mut wake: Vec<(VnetId, Instant)> = Vec::new();
            for i in 1.. {
                match tap.read_frame(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = from_host.send(now, buf[..n].to_vec(), &mut |v, at| match wake
                            .iter_mut()
                            .find(|(w, _)| *w == v)
                        {
                            Some((_, t)) => *t = (*t).min(at),
                            None => wake.push((v, at)),
                        });
                        if i % 64 == 0 {
                            for (v, at) in wake.drain(..) {
                                (io.wake)(v, at);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        // The far end is gone for good: so is the link.
                        ended = true;
                        to_host.kill();
                        break;
                    }
                    Err(e) => {
                        log::debug!("tap pump: read: {e}");
                        break;
                    }
                }
            }
            for (v, at) in wake.drain(..) {
                (io.wake)(v, at);
            }
        } else if fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            // The device is gone; wait only for the stop signal.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
