//! The routing device: the one smoltcp `Device` of a vnet.
//!
//! smoltcp's `Interface` sees a single IP-medium device. Packets it sends
//! land in `tx`, where our own IP output routes them to an interface (or back
//! to `rx` when they are for this vnet); packets our IP input accepts for
//! this vnet are queued on `rx` for smoltcp to read. Buffers keep room in
//! front of the IP header for an Ethernet header, so a packet goes from a
//! socket to a wire, and from a wire to a socket, without being copied.

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::ETHERNET_HEADER_LEN;

/// Room kept in front of every IP packet for a link-layer header.
pub const HEADROOM: usize = ETHERNET_HEADER_LEN;

/// The largest IP packet the device carries (and so smoltcp's MTU).
pub const DEVICE_MTU: usize = 65535;

/// An IP packet in a buffer that has `off` bytes of headroom in front.
#[derive(Debug)]
pub struct Pkt {
    /// The buffer.
    pub buf: Vec<u8>,
    /// Where the IP header starts.
    pub off: usize,
}

impl Pkt {
    /// The IP packet.
    pub fn ip(&self) -> &[u8] {
        &self.buf[self.off..]
    }
    /// The IP packet, mutably.
    pub fn ip_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..]
    }
    /// A packet made from a bare IP packet (copied behind new headroom).
    pub fn from_ip(ip: &[u8]) -> Pkt {
        let mut buf = Vec::with_capacity(HEADROOM + ip.len());
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(ip);
        Pkt { buf, off: HEADROOM }
    }
}

/// The device smoltcp reads from and writes to.
#[derive(Debug, Default)]
pub struct RoutingDevice {
    /// Packets for this vnet's sockets.
    pub rx: VecDeque<Pkt>,
    /// Packets this vnet's sockets sent, to be routed.
    pub tx: VecDeque<Pkt>,
}

/// A received packet handed to smoltcp.
pub struct RxToken(Pkt);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0.ip())
    }
}

/// Room for one packet smoltcp sends.
pub struct TxToken<'a>(&'a mut VecDeque<Pkt>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = vec![0u8; HEADROOM + len];
        let r = f(&mut buf[HEADROOM..]);
        self.0.push_back(Pkt { buf, off: HEADROOM });
        r
    }
}

impl phy::Device for RoutingDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = DEVICE_MTU;
        // Every checksum is computed and verified: frames may come from
        // outside the process.
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}
