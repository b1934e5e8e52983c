//! Programs for the common policy options, emitted here without libpcap:
//! which source MACs, source addresses and destination addresses an
//! interface may use.
//!
//! Untagged Ethernet only: the offsets are those of an Ethernet header
//! without a VLAN tag, so a tagged frame (ethertype 0x8100) is rejected.
//!
//! Every program has the same shape: a dispatch on the ethertype that jumps
//! to one section per family (through a `ja`, whose offset has 32 bits,
//! when a section is too far for a conditional jump), and in each
//! section a run of alternatives, each a few comparisons ending in its own
//! `ret #-1`, with a mismatch skipping to the next alternative. Conditional
//! jumps thus stay within one alternative (their offsets have 8 bits), so a
//! list of any length up to the 4096-instruction limit compiles.

use smoltcp::wire::{EthernetAddress, IpCidr};

use super::code::*;
use super::{ACCEPT, BpfError, Insn, Program};

const ETHERTYPE_ARP: u32 = 0x0806;
const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_IPV6: u32 = 0x86dd;

/// Frame offsets, for an untagged Ethernet header of 14 bytes.
const ETH_SRC: u32 = 6;
const ETH_TYPE: u32 = 12;
const ARP_HTYPE_PTYPE: u32 = 14;
const ARP_HLEN_PLEN: u32 = 18;
const ARP_SPA: u32 = 28;
const ARP_TPA: u32 = 38;
const IPV4_SRC: u32 = 26;
const IPV4_DST: u32 = 30;
const IPV6_SRC: u32 = 22;
const IPV6_DST: u32 = 38;

/// One comparison: the `size` (W, H or B) at `off`, masked, equals `value`.
#[derive(Clone, Copy)]
struct Cmp {
    size: u16,
    off: u32,
    mask: u32,
    value: u32,
}

impl Cmp {
    fn word(off: u32, mask: u32, value: u32) -> Cmp {
        Cmp {
            size: W,
            off,
            mask,
            value: value & mask,
        }
    }

    fn emit(&self, out: &mut Vec<Insn>, jt: u8, jf: u8) {
        out.push(Insn::stmt(LD | self.size | ABS, self.off));
        let full = match self.size {
            H => 0xffff,
            B => 0xff,
            _ => u32::MAX,
        };
        if self.mask != full {
            out.push(Insn::stmt(ALU | AND | K, self.mask));
        }
        out.push(Insn::jump(JMP | JEQ | K, self.value, jt, jf));
    }
}

/// A frame section under construction.
#[derive(Default)]
struct Section(Vec<Insn>);

impl Section {
    /// Rejects the frame unless `cmp` holds.
    fn require(&mut self, cmp: Cmp) {
        cmp.emit(&mut self.0, 1, 0);
        self.0.push(Insn::stmt(RET | K, 0));
    }

    /// Accepts the frame if every comparison holds; otherwise goes on after
    /// this alternative.
    fn alternative(&mut self, all: &[Cmp]) {
        let mut block = Vec::new();
        let mut jeqs = Vec::new();
        for cmp in all {
            cmp.emit(&mut block, 0, 0);
            jeqs.push(block.len() - 1);
        }
        block.push(Insn::stmt(RET | K, ACCEPT));
        // A mismatch jumps to just past this block's return. A block holds
        // at most four comparisons of three instructions.
        for j in jeqs {
            block[j].jf = (block.len() - (j + 1)) as u8;
        }
        self.0.extend(block);
    }

    /// Ends the section: nothing matched.
    fn reject(mut self) -> Vec<Insn> {
        self.0.push(Insn::stmt(RET | K, 0));
        self.0
    }
}

/// The comparisons that hold when the IPv4 address at `off` is in the
/// prefix (none for a /0).
fn v4_prefix(off: u32, addr: [u8; 4], len: u8) -> Vec<Cmp> {
    if len == 0 {
        return Vec::new();
    }
    let mask = u32::MAX << (32 - u32::from(len.min(32)));
    vec![Cmp::word(off, mask, u32::from_be_bytes(addr))]
}

/// The comparisons that hold when the IPv6 address at `off` is in the
/// prefix, one per word the prefix touches.
fn v6_prefix(off: u32, addr: [u8; 16], len: u8) -> Vec<Cmp> {
    let len = u32::from(len.min(128));
    (0..4u32)
        .filter(|i| len > i * 32)
        .map(|i| {
            let bits = (len - i * 32).min(32);
            let mask = u32::MAX << (32 - bits);
            let at = (i * 4) as usize;
            let w = u32::from_be_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
            Cmp::word(off + i * 4, mask, w)
        })
        .collect()
}

fn v4_cidrs(cidrs: &[IpCidr]) -> Vec<([u8; 4], u8)> {
    cidrs
        .iter()
        .filter_map(|c| match c {
            IpCidr::Ipv4(c) => Some((c.address().octets(), c.prefix_len())),
            IpCidr::Ipv6(_) => None,
        })
        .collect()
}

fn v6_cidrs(cidrs: &[IpCidr]) -> Vec<([u8; 16], u8)> {
    cidrs
        .iter()
        .filter_map(|c| match c {
            IpCidr::Ipv6(c) => Some((c.address().octets(), c.prefix_len())),
            IpCidr::Ipv4(_) => None,
        })
        .collect()
}

/// An ARP section: Ethernet/IPv4 ARP only (other hardware or protocol
/// types put the addresses elsewhere), then the address at `off`.
fn arp_section(off: u32, v4: &[([u8; 4], u8)]) -> Vec<Insn> {
    let mut s = Section::default();
    s.require(Cmp::word(ARP_HTYPE_PTYPE, u32::MAX, 0x0001_0800));
    s.require(Cmp {
        size: H,
        off: ARP_HLEN_PLEN,
        mask: 0xffff,
        value: 0x0604,
    });
    for (a, l) in v4 {
        s.alternative(&v4_prefix(off, *a, *l));
    }
    s.reject()
}

fn v4_section(off: u32, v4: &[([u8; 4], u8)], extra: &[([u8; 4], u8)]) -> Vec<Insn> {
    let mut s = Section::default();
    for (a, l) in v4.iter().chain(extra) {
        s.alternative(&v4_prefix(off, *a, *l));
    }
    s.reject()
}

fn v6_section(off: u32, v6: &[([u8; 16], u8)], extra: &[([u8; 16], u8)]) -> Vec<Insn> {
    let mut s = Section::default();
    for (a, l) in v6.iter().chain(extra) {
        s.alternative(&v6_prefix(off, *a, *l));
    }
    s.reject()
}

/// Joins sections behind a dispatch on the ethertype; other ethertypes are
/// rejected. A section within reach of a conditional jump (255
/// instructions) is jumped to directly, a farther one through a `ja`.
fn dispatch(sections: Vec<(u32, Vec<Insn>)>) -> Result<Program, BpfError> {
    let mut far = vec![false; sections.len()];
    let out = loop {
        let head = 2 + sections.len() + far.iter().filter(|f| **f).count();
        let mut out = vec![Insn::stmt(LD | H | ABS, ETH_TYPE)];
        let mut start = head;
        let mut grew = false;
        for (i, (ethertype, body)) in sections.iter().enumerate() {
            let at = out.len();
            if far[i] {
                out.push(Insn::jump(JMP | JEQ | K, *ethertype, 0, 1));
                out.push(Insn::stmt(JMP | JA, (start - (at + 2)) as u32));
            } else if let Ok(skip) = u8::try_from(start - (at + 1)) {
                out.push(Insn::jump(JMP | JEQ | K, *ethertype, skip, 0));
            } else {
                far[i] = true;
                grew = true;
                break;
            }
            start += body.len();
        }
        if !grew {
            break out;
        }
    };
    let mut out = out;
    out.push(Insn::stmt(RET | K, 0));
    for (_, body) in sections {
        out.extend(body);
    }
    Program::new(out)
}

/// A program accepting only frames whose Ethernet source is one of `macs`
/// (none: every frame is rejected). Frames shorter than an Ethernet header
/// are rejected. Accepted frames return [`ACCEPT`].
///
/// # Errors
/// [`BpfError::TooLong`] for a list of more than about 800 addresses.
pub fn allow_mac(macs: &[EthernetAddress]) -> Result<Program, BpfError> {
    let mut s = Section::default();
    // A load of the ethertype alone: it ends the program with 0 on a frame
    // shorter than an Ethernet header.
    s.0.push(Insn::stmt(LD | H | ABS, ETH_TYPE));
    for mac in macs {
        let b = mac.as_bytes();
        s.alternative(&[
            Cmp::word(
                ETH_SRC,
                u32::MAX,
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            ),
            Cmp {
                size: H,
                off: ETH_SRC + 4,
                mask: 0xffff,
                value: u32::from(u16::from_be_bytes([b[4], b[5]])),
            },
        ]);
    }
    Program::new(s.reject())
}

/// A program accepting only frames whose source address is allowed, for
/// the transmit direction of an interface (anti-spoofing):
///
/// - ARP (Ethernet/IPv4 only) whose sender protocol address is in one of
///   the IPv4 prefixes (an ARP probe's sender 0.0.0.0 only if 0.0.0.0/32 is
///   listed);
/// - IPv4 whose source is in one of the IPv4 prefixes;
/// - IPv6 whose source is in one of the IPv6 prefixes, or is link-local
///   (fe80::/10) or unspecified (`::`), so that neighbor discovery and
///   duplicate address detection keep working. Only when at least one IPv6
///   prefix is given: without one, IPv6 is rejected; likewise ARP and IPv4
///   without an IPv4 prefix.
///
/// Every other ethertype, VLAN tags included, is rejected. Host bits in a
/// prefix are ignored.
///
/// # Errors
/// [`BpfError::TooLong`] for a list of more than a few hundred prefixes.
pub fn allow_src(cidrs: &[IpCidr]) -> Result<Program, BpfError> {
    let v4 = v4_cidrs(cidrs);
    let v6 = v6_cidrs(cidrs);
    let mut sections = Vec::new();
    // IPv4 first: the commonest frame takes the fewest jumps.
    if !v4.is_empty() {
        sections.push((ETHERTYPE_IPV4, v4_section(IPV4_SRC, &v4, &[])));
        sections.push((ETHERTYPE_ARP, arp_section(ARP_SPA, &v4)));
    }
    if !v6.is_empty() {
        let mut link_local = [0u8; 16];
        link_local[0] = 0xfe;
        link_local[1] = 0x80;
        let extra = [(link_local, 10), ([0u8; 16], 128)];
        sections.push((ETHERTYPE_IPV6, v6_section(IPV6_SRC, &v6, &extra)));
    }
    dispatch(sections)
}

/// A program accepting only frames for allowed destinations, for the
/// receive direction of an interface:
///
/// - ARP (Ethernet/IPv4 only) whose target protocol address is in one of
///   the IPv4 prefixes;
/// - IPv4 whose destination is in one of the IPv4 prefixes, or is the
///   limited broadcast 255.255.255.255 or multicast (224.0.0.0/4);
/// - IPv6 whose destination is in one of the IPv6 prefixes, or is multicast
///   (ff00::/8) or link-local (fe80::/10).
///
/// As with [`allow_src`], a family with no prefix given is rejected, and
/// so is every other ethertype, VLAN tags included.
///
/// # Errors
/// [`BpfError::TooLong`] for a list of more than a few hundred prefixes.
pub fn allow_dst(cidrs: &[IpCidr]) -> Result<Program, BpfError> {
    let v4 = v4_cidrs(cidrs);
    let v6 = v6_cidrs(cidrs);
    let mut sections = Vec::new();
    if !v4.is_empty() {
        let extra = [([255; 4], 32), ([224, 0, 0, 0], 4)];
        sections.push((ETHERTYPE_IPV4, v4_section(IPV4_DST, &v4, &extra)));
        sections.push((ETHERTYPE_ARP, arp_section(ARP_TPA, &v4)));
    }
    if !v6.is_empty() {
        let mut multicast = [0u8; 16];
        multicast[0] = 0xff;
        let mut link_local = [0u8; 16];
        link_local[0] = 0xfe;
        link_local[1] = 0x80;
        let extra = [(multicast, 8), (link_local, 10)];
        sections.push((ETHERTYPE_IPV6, v6_section(IPV6_DST, &v6, &extra)));
    }
    dispatch(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_mac_list_rejects_everything() {
        let p = allow_mac(&[]).unwrap();
        assert_eq!(p.run(&[0u8; 64]), 0);
    }

    #[test]
    fn a_long_list_still_compiles() {
        let macs: Vec<EthernetAddress> = (0..800u32)
            .map(|i| {
                let b = i.to_be_bytes();
                EthernetAddress([2, 0, b[0], b[1], b[2], b[3]])
            })
            .collect();
        let p = allow_mac(&macs).unwrap();
        let mut frame = [0u8; 60];
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 3, 31]);
        assert_eq!(p.run(&frame), ACCEPT, "the 800th address");
        let too_many: Vec<EthernetAddress> = (0..1000).map(|_| EthernetAddress([2; 6])).collect();
        assert!(matches!(allow_mac(&too_many), Err(BpfError::TooLong(_))));
    }

    #[test]
    fn far_sections_are_reached_through_ja() {
        let many: Vec<IpCidr> = (0..100u8)
            .map(|i| IpCidr::new(std::net::Ipv4Addr::new(10, i, 0, 0).into(), 16))
            .chain([IpCidr::new(std::net::Ipv6Addr::LOCALHOST.into(), 128)])
            .collect();
        let p = allow_src(&many).unwrap();
        let ja = p.insns().iter().filter(|i| i.code == JMP | JA).count();
        assert_eq!(
            ja, 2,
            "the ARP and IPv6 sections lie behind the long IPv4 one"
        );
        let mut frame = vec![0u8; 54];
        frame[12..14].copy_from_slice(&[0x86, 0xdd]);
        frame[22 + 15] = 1;
        assert_eq!(p.run(&frame), ACCEPT, "::1 reached past both IPv4 sections");
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[26..30].copy_from_slice(&[10, 99, 3, 4]);
        assert_eq!(p.run(&frame), ACCEPT);
        frame[26..30].copy_from_slice(&[10, 100, 3, 4]);
        assert_eq!(p.run(&frame), 0);
    }

    #[test]
    fn v6_prefixes_compare_only_the_words_they_cover() {
        let c = v6_prefix(0, [0xfd; 16], 40);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].mask, 0xff00_0000);
        assert_eq!(c[1].value, 0xfd00_0000);
        assert!(v6_prefix(0, [0; 16], 0).is_empty());
    }
}
