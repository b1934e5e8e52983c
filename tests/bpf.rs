//! Packet filters: what the validator refuses and why, libpcap's compiler
//! against the real `tcpdump -ddd`, verdicts on hand-built frames, the
//! generated policy checks, the filter stage on a wire, and our interpreter
//! against libpcap's own (`bpf_filter`) on random frames and programs.

use std::io::ErrorKind;
use std::process::Command;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smoltcp::wire::{EthernetAddress, IpCidr};
use vnet::ifnet::bpf::{
    self, ACCEPT, BpfError, Check, Filter, Insn, Problem, Program, code::*, libpcap_filter,
};
use vnet::ifnet::{TxDrop, Wire};
use vnet::vnet::VnetId;
use vnet::{Duration, Instant};

// ---------------------------------------------------------------- frames

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An Ethernet/IPv4 ARP frame.
fn arp(src_mac: [u8; 6], op: u16, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa);
    eth(BCAST, src_mac, 0x0806, &p)
}

/// A TCP header from `sport` to `dport` with `flags`.
fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    eth(MAC_B, MAC_A, 0x0800, &h)
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    eth(MAC_B, MAC_A, 0x86dd, &h)
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn cidrs(list: &[&str]) -> Vec<IpCidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

fn tcp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ipv4(src, dst, 6, &tcp(40000, 80, 0x02))
}

// ---------------------------------------------------------------- validation

fn refused(insns: &[Insn]) -> BpfError {
    Program::new(insns.to_vec()).expect_err("must be refused")
}

fn invalid(index: usize, problem: Problem) -> BpfError {
    BpfError::Invalid { index, problem }
}

const RET0: Insn = Insn::stmt(RET | K, 0);

#[test]
fn an_empty_program_is_refused() {
    assert_eq!(refused(&[]), BpfError::Empty);
}

#[test]
fn a_program_longer_than_4096_instructions_is_refused() {
    assert_eq!(refused(&[RET0; 4097]), BpfError::TooLong(4097));
    assert!(Program::new(vec![RET0; 4096]).is_ok());
}

#[test]
fn unknown_opcodes_are_refused() {
    for code in [
        RET | X,         // RET X is not classic BPF
        ALU | NEG | X,   // nor NEG X
        LD | B | LEN,    // LEN loads a word only
        LDX | W | ABS,   // LDX has no ABS
        LDX | W | MSH,   // MSH is a byte load
        ST | B,          // stores have no size
        MISC | 0x40,     // neither TAX nor TXA
        JMP | 0x50,      // no such jump
        ALU | 0xb0,      // no such ALU operation
        0x100 | RET | K, // opcodes are 8 bits
    ] {
        assert_eq!(
            refused(&[Insn::stmt(code, 0), RET0]),
            invalid(0, Problem::UnknownOpcode(code)),
            "{code:#x}"
        );
    }
}

#[test]
fn jumps_must_land_inside_the_program() {
    let e = refused(&[
        Insn::stmt(LD | IMM, 0),
        Insn::stmt(LD | IMM, 0),
        Insn::stmt(LD | IMM, 0),
        Insn::stmt(JMP | JA, 1),
        RET0,
    ]);
    assert_eq!(e, invalid(3, Problem::JumpPastEnd));
    assert_eq!(
        e.to_string(),
        "instruction 3: jump lands past the end of the program"
    );
    let jeq = |jt, jf| Insn::jump(JMP | JEQ | K, 0, jt, jf);
    assert_eq!(
        refused(&[jeq(2, 0), RET0, RET0]),
        invalid(0, Problem::JumpPastEnd)
    );
    assert_eq!(
        refused(&[jeq(0, 2), RET0, RET0]),
        invalid(0, Problem::JumpPastEnd)
    );
    assert_eq!(
        refused(&[Insn::jump(JMP | JSET | X, 0, 0, 255), RET0]),
        invalid(0, Problem::JumpPastEnd)
    );
    // The last instruction is a valid target.
    assert!(Program::new(vec![jeq(1, 0), RET0, RET0]).is_ok());
    // JA's offset is 32 bits: a huge one must not wrap around.
    assert_eq!(
        refused(&[Insn::stmt(JMP | JA, 0x7fff_ffff), RET0]),
        invalid(0, Problem::JumpPastEnd)
    );
}

#[test]
fn backward_jumps_are_refused() {
    let e = refused(&[RET0, Insn::stmt(JMP | JA, (-2i32) as u32), RET0]);
    assert_eq!(e, invalid(1, Problem::JumpBackwards));
    assert!(e.to_string().contains("backwards"), "{e}");
}

#[test]
fn scratch_memory_indices_must_be_below_16() {
    for code in [LD | MEM, LDX | MEM, ST, STX] {
        assert_eq!(
            refused(&[Insn::stmt(code, 16), RET0]),
            invalid(0, Problem::ScratchIndex(16)),
            "{code:#x}"
        );
    }
    assert!(Program::new(vec![Insn::stmt(ST, 15), Insn::stmt(LDX | MEM, 15), RET0]).is_ok());
}

#[test]
fn scratch_memory_must_be_stored_before_it_is_read() {
    assert_eq!(
        refused(&[Insn::stmt(LD | MEM, 2), RET0]),
        invalid(0, Problem::ScratchUnset(2))
    );
    // Stored on one branch only.
    assert_eq!(
        refused(&[
            Insn::jump(JMP | JGT | K, 5, 0, 1),
            Insn::stmt(STX, 4),
            Insn::stmt(LDX | MEM, 4),
            RET0,
        ]),
        invalid(2, Problem::ScratchUnset(4))
    );
}

#[test]
fn division_and_modulo_by_constant_zero_are_refused() {
    assert_eq!(
        refused(&[Insn::stmt(ALU | DIV | K, 0), RET0]),
        invalid(0, Problem::DivisionByZero)
    );
    assert_eq!(
        refused(&[Insn::stmt(ALU | MOD | K, 0), RET0]),
        invalid(0, Problem::ModuloByZero)
    );
}

#[test]
fn constant_shifts_of_32_or_more_are_refused() {
    for code in [ALU | LSH | K, ALU | RSH | K] {
        assert_eq!(
            refused(&[Insn::stmt(code, 32), RET0]),
            invalid(0, Problem::ShiftTooLarge(32))
        );
        assert!(Program::new(vec![Insn::stmt(code, 31), RET0]).is_ok());
    }
}

#[test]
fn linux_special_offsets_are_refused_with_a_reason() {
    let ad_protocol = (-0x1000i32) as u32; // SKF_AD_OFF + SKF_AD_PROTOCOL
    let e = refused(&[Insn::stmt(LD | H | ABS, ad_protocol), RET0]);
    assert_eq!(e, invalid(0, Problem::Ancillary(0)));
    assert!(e.to_string().contains("SKF_AD_OFF"), "{e}");
    assert_eq!(
        refused(&[Insn::stmt(LD | W | IND, ad_protocol + 4), RET0]),
        invalid(0, Problem::Ancillary(4))
    );
    let net = (-0x10_0000i32 + 9) as u32; // SKF_NET_OFF + 9: the IPv4 protocol
    assert_eq!(
        refused(&[Insn::stmt(LD | B | ABS, net), RET0]),
        invalid(0, Problem::NetOffset(9))
    );
    let ll = (-0x20_0000i32 + 12) as u32;
    assert_eq!(
        refused(&[Insn::stmt(LD | H | ABS, ll), RET0]),
        invalid(0, Problem::LinkOffset(12))
    );
    // Below SKF_LL_OFF an offset is merely out of bounds.
    let p = Program::new(vec![Insn::stmt(LD | B | ABS, 0x8000_0000), RET0]).unwrap();
    assert_eq!(p.run(&[0; 64]), 0);
}

#[test]
fn the_last_instruction_must_be_a_return() {
    let e = refused(&[RET0, Insn::stmt(LD | IMM, 1)]);
    assert_eq!(e, invalid(1, Problem::NoReturn));
    assert_eq!(
        e.to_string(),
        "instruction 1: the last instruction must be a return"
    );
}

// ---------------------------------------------------------------- text and tcpdump

/// Expressions compared with tcpdump and run differentially: between them
/// they use every addressing mode libpcap emits.
const EXPRESSIONS: &[&str] = &[
    "arp or (ip and src net 10.1.0.0/24)",
    "arp",
    "ip",
    "ip6",
    "tcp",
    "udp port 53",
    "icmp or icmp6",
    "ether src 02:00:00:00:00:0a",
    "ether dst ff:ff:ff:ff:ff:ff",
    "ether multicast",
    "host 10.1.0.1 and not port 22",
    "dst net 192.168.0.0/16",
    "ip6 and src net fe80::/10",
    "ip6 dst host ff02::1",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "portrange 1000-2000",
    "tcp dst port 80 and (ip[2:2] - ((ip[0]&0xf)<<2)) > 40",
    "len > 100",
    "greater 64 and less 1000",
    "ip[8] < 5",
    "ether[0] & 1 = 1",
    "vlan and ip",
    "ip proto 47",
    "ip[6:2] & 0x1fff != 0",
    "udp[8:4] = 0xdeadbeef",
    "(tcp[12] >> 4) * 4 % 3 = 1",
    "ip and (ip[16] ^ ip[12]) & 0xf0 = 0",
    "ip and ip[0] - 0x40 = 5",
];

/// The real tcpdump, or None (and the test says so) when it is absent.
fn tcpdump_ddd(expr: &str) -> Option<String> {
    let out = match Command::new("tcpdump")
        .args(["-s", "65535", "-ddd", expr])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => panic!("tcpdump: {e}"),
    };
    assert!(
        out.status.success(),
        "tcpdump -ddd {expr:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn libpcap_compiles_as_tcpdump_does_instruction_for_instruction() {
    let mut compared = 0;
    for expr in EXPRESSIONS {
        let Some(text) = tcpdump_ddd(expr) else {
            eprintln!("skipped: tcpdump is not installed");
            return;
        };
        let theirs = Program::from_text(&text).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let ours = bpf::compile(expr).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours.insns(), theirs.insns(), "{expr}");
        // And the text form prints back exactly what tcpdump printed.
        assert_eq!(ours.to_string(), text, "{expr}");
        compared += 1;
    }
    assert_eq!(compared, EXPRESSIONS.len());
}

#[test]
fn the_one_line_text_form_round_trips() {
    for expr in EXPRESSIONS {
        let p = bpf::compile(expr).unwrap();
        assert_eq!(Program::from_text(&p.to_line()).unwrap(), p, "{expr}");
        let semi = p.to_line().replace(',', " ; ");
        assert_eq!(Program::from_text(&semi).unwrap(), p, "{expr}");
    }
}

#[test]
fn libpcap_errors_and_refusals_are_reported() {
    let e = bpf::compile("tcp port").unwrap_err();
    assert!(
        matches!(&e, BpfError::Compile { expr, message } if expr == "tcp port" && message.contains("syntax error")),
        "{e}"
    );
    let e = bpf::compile("port 99999").unwrap_err();
    assert!(e.to_string().contains("port 99999"), "{e}");
    // libpcap implements protochain with a backward jump: not classic BPF.
    let e = bpf::compile("ip6 protochain 6").unwrap_err();
    assert!(e.to_string().contains("jump goes backwards"), "{e}");
}

#[test]
fn libpcap_compiles_from_several_threads_at_once() {
    let want: Vec<Program> = EXPRESSIONS
        .iter()
        .map(|e| bpf::compile(e).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let want = &want;
            s.spawn(move || {
                for round in 0..10 {
                    for n in 0..EXPRESSIONS.len() {
                        // Each thread in its own order.
                        let i = (n + t * 7 + round) % EXPRESSIONS.len();
                        assert_eq!(bpf::compile(EXPRESSIONS[i]).unwrap(), want[i]);
                        assert!(bpf::compile("tcp port").is_err());
                    }
                }
            });
        }
    });
}

// ---------------------------------------------------------------- verdicts

#[test]
fn a_compiled_expression_accepts_arp_and_the_subnets_ipv4_only() {
    let p = bpf::compile("arp or (ip and src net 10.1.0.0/24)").unwrap();
    assert_eq!(
        p.run(&arp(MAC_A, 1, [192, 168, 9, 9], [10, 1, 0, 1])),
        65535
    );
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [10, 2, 0, 1])), 65535);
    assert_eq!(p.run(&tcp4([10, 1, 0, 255], [8, 8, 8, 8])), 65535);
    assert_eq!(p.run(&tcp4([10, 1, 1, 5], [10, 1, 0, 1])), 0);
    assert_eq!(p.run(&tcp4([10, 2, 0, 5], [10, 1, 0, 1])), 0);
    let six = ipv6(v6("fd00::1"), v6("fd00::2"), 6, &tcp(1, 2, 0x10));
    assert_eq!(p.run(&six), 0);
    // Cut before the source address: the load fails, the frame is rejected.
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [10, 1, 0, 1])[..28]), 0);
    assert_eq!(p.run(&[]), 0);
}

#[test]
fn allow_mac_accepts_only_the_listed_sources() {
    let p = bpf::allow_mac(&[EthernetAddress(MAC_A), EthernetAddress([2, 9, 9, 9, 9, 9])]).unwrap();
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [10, 1, 0, 1])), ACCEPT);
    assert_eq!(p.run(&arp(MAC_A, 1, [0; 4], [0; 4])), ACCEPT);
    assert_eq!(p.run(&arp(MAC_B, 1, [0; 4], [0; 4])), 0);
    // Same first four bytes, another last two.
    assert_eq!(p.run(&arp([2, 9, 9, 9, 9, 8], 1, [0; 4], [0; 4])), 0);
    // A runt frame is rejected even when its source matches.
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [10, 1, 0, 1])[..13]), 0);
}

#[test]
fn allow_src_stops_ipv4_and_arp_spoofing() {
    let p = bpf::allow_src(&cidrs(&["10.1.0.0/24", "192.0.2.7/32"])).unwrap();
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [1, 1, 1, 1])), ACCEPT);
    assert_eq!(p.run(&tcp4([192, 0, 2, 7], [1, 1, 1, 1])), ACCEPT);
    assert_eq!(p.run(&tcp4([192, 0, 2, 8], [1, 1, 1, 1])), 0);
    assert_eq!(p.run(&tcp4([10, 1, 1, 5], [1, 1, 1, 1])), 0);
    // ARP: the sender protocol address counts, not the target.
    assert_eq!(p.run(&arp(MAC_A, 1, [10, 1, 0, 5], [10, 1, 0, 1])), ACCEPT);
    assert_eq!(
        p.run(&arp(MAC_A, 2, [10, 9, 0, 1], [10, 1, 0, 5])),
        0,
        "ARP spoofing"
    );
    // An ARP probe claims 0.0.0.0, which is not listed.
    assert_eq!(p.run(&arp(MAC_A, 1, [0; 4], [10, 1, 0, 5])), 0);
    // ARP for another protocol type puts the addresses elsewhere.
    let mut odd = arp(MAC_A, 1, [10, 1, 0, 5], [10, 1, 0, 1]);
    odd[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(p.run(&odd), 0);
    // No IPv6 prefix given: IPv6 is rejected, link-local too.
    let ll = ipv6(v6("fe80::1"), v6("ff02::1"), 58, &[135, 0, 0, 0]);
    assert_eq!(p.run(&ll), 0);
    // Other ethertypes and VLAN tags are rejected.
    let mut tagged = eth(MAC_B, MAC_A, 0x8100, &[0, 5, 0x08, 0x00]);
    tagged.extend_from_slice(&tcp4([10, 1, 0, 5], [1, 1, 1, 1])[14..]);
    assert_eq!(p.run(&tagged), 0);
    assert_eq!(p.run(&eth(MAC_B, MAC_A, 0x88cc, &[0; 46])), 0);
}

#[test]
fn allow_src_keeps_ipv6_neighbor_discovery_working() {
    let p = bpf::allow_src(&cidrs(&["fd00:1::/64", "2001:db8::/40"])).unwrap();
    let from = |s: &str| ipv6(v6(s), v6("ff02::1:ff00:1"), 58, &[135, 0, 0, 0]);
    assert_eq!(p.run(&from("fd00:1::42")), ACCEPT);
    assert_eq!(p.run(&from("2001:db8:ff::1")), ACCEPT, "inside the /40");
    assert_eq!(p.run(&from("2001:db8:100::1")), 0, "outside the /40");
    assert_eq!(p.run(&from("fd00:2::42")), 0);
    assert_eq!(p.run(&from("fe80::1")), ACCEPT, "link-local");
    assert_eq!(p.run(&from("febf:ffff::1")), ACCEPT, "link-local is a /10");
    assert_eq!(p.run(&from("fec0::1")), 0);
    assert_eq!(p.run(&from("::")), ACCEPT, "duplicate address detection");
    assert_eq!(p.run(&from("::1")), 0);
    // No IPv4 prefix given: IPv4 and ARP are rejected.
    assert_eq!(p.run(&tcp4([10, 1, 0, 5], [1, 1, 1, 1])), 0);
    assert_eq!(p.run(&arp(MAC_A, 1, [10, 1, 0, 5], [10, 1, 0, 1])), 0);
}

#[test]
fn allow_dst_accepts_the_prefixes_broadcast_and_multicast() {
    let p = bpf::allow_dst(&cidrs(&["10.1.0.0/24", "fd00:1::/64"])).unwrap();
    assert_eq!(p.run(&tcp4([8, 8, 8, 8], [10, 1, 0, 5])), ACCEPT);
    assert_eq!(p.run(&tcp4([8, 8, 8, 8], [10, 1, 2, 5])), 0);
    assert_eq!(p.run(&tcp4([10, 1, 0, 9], [255, 255, 255, 255])), ACCEPT);
    assert_eq!(p.run(&tcp4([10, 1, 0, 9], [224, 0, 0, 251])), ACCEPT);
    assert_eq!(p.run(&tcp4([10, 1, 0, 9], [239, 255, 255, 250])), ACCEPT);
    assert_eq!(p.run(&tcp4([10, 1, 0, 9], [240, 0, 0, 1])), 0);
    assert_eq!(p.run(&arp(MAC_A, 1, [10, 9, 9, 9], [10, 1, 0, 5])), ACCEPT);
    assert_eq!(p.run(&arp(MAC_A, 1, [10, 1, 0, 5], [10, 9, 9, 9])), 0);
    let to = |s: &str| ipv6(v6("fd00:9::1"), v6(s), 17, &[0; 8]);
    assert_eq!(p.run(&to("fd00:1::5")), ACCEPT);
    assert_eq!(p.run(&to("fd00:2::5")), 0);
    assert_eq!(p.run(&to("ff02::1")), ACCEPT);
    assert_eq!(p.run(&to("fe80::5")), ACCEPT);
}

// ---------------------------------------------------------------- the stage

#[test]
fn a_filter_on_a_wire_drops_with_the_first_failing_checks_reason() {
    let checks = vec![
        Check::allow_mac(&[EthernetAddress(MAC_A)]).unwrap(),
        Check::allow_src(&cidrs(&["10.1.0.0/24"])).unwrap(),
        Check::expression("not udp port 53").unwrap(),
    ];
    let (filter, handle) = Filter::new("tap0 out".to_string(), checks);
    let wire = Wire::new();
    wire.set_rx_owner(Some(VnetId(7)));
    wire.push_stage(Box::new(filter));
    let now = Instant::from_millis(0);
    let ok = tcp4([10, 1, 0, 5], [1, 1, 1, 1]);
    assert!(wire.send(now, ok.clone(), &mut |_, _| ()).is_ok());
    assert!(wire.send(now, ok, &mut |_, _| ()).is_ok());
    let mut wrong_mac = tcp4([10, 1, 0, 5], [1, 1, 1, 1]);
    wrong_mac[6..12].copy_from_slice(&MAC_B);
    assert_eq!(
        wire.send(now, wrong_mac, &mut |_, _| ()),
        Err(TxDrop::Stage(Check::MAC))
    );
    assert_eq!(
        wire.send(now, tcp4([10, 9, 0, 5], [1, 1, 1, 1]), &mut |_, _| ()),
        Err(TxDrop::Stage(Check::SRC))
    );
    let dns = ipv4([10, 1, 0, 5], [1, 1, 1, 1], 17, &[0, 53, 0, 53, 0, 8, 0, 0]);
    assert_eq!(
        wire.send(now, dns, &mut |_, _| ()),
        Err(TxDrop::Stage(Check::EXPRESSION))
    );

    assert_eq!(handle.name(), "tap0 out");
    assert_eq!(handle.passed(), 2);
    assert_eq!(
        handle.drops(),
        vec![(Check::MAC, 1), (Check::SRC, 1), (Check::EXPRESSION, 1)]
    );
    let listed = handle.checks();
    assert_eq!(listed[0].text, "allow-mac 02:00:00:00:00:0a");
    assert_eq!(listed[1].text, "allow-src 10.1.0.0/24");
    assert_eq!(listed[2].text, "not udp port 53");
    assert_eq!(
        wire.stats().drop_stage,
        vec![(Check::MAC, 1), (Check::SRC, 1), (Check::EXPRESSION, 1)]
    );
    let mut out = Vec::new();
    wire.recv_due(now + Duration::from_millis(1), &mut out);
    assert_eq!(out.len(), 2);
}

// ---------------------------------------------------------------- differential

/// A frame for the differential tests: mostly plausible ARP, IPv4 and IPv6
/// frames with fields drawn from small sets (so that expressions match
/// often), then mutated and cut at random; sometimes pure noise.
fn random_frame(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let pick = |rng: &mut ChaCha8Rng, n: u32| rng.next_u32() % n;
    let addr4 = |rng: &mut ChaCha8Rng| -> [u8; 4] {
        match rng.next_u32() % 5 {
            0 => [10, 1, 0, (rng.next_u32() % 4) as u8],
            1 => [10, 1, 1, 1],
            2 => [192, 168, 3, 4],
            3 => [224, 0, 0, 1],
            _ => [255, 255, 255, 255],
        }
    };
    let addr6 = |rng: &mut ChaCha8Rng| -> [u8; 16] {
        match rng.next_u32() % 4 {
            0 => v6("fe80::1"),
            1 => v6("ff02::1"),
            2 => v6("fd00:1::5"),
            _ => [0; 16],
        }
    };
    let mut f = match pick(rng, 6) {
        0 => arp(MAC_A, 1 + pick(rng, 2) as u16, addr4(rng), addr4(rng)),
        1 | 2 => {
            let (proto, payload) = match pick(rng, 4) {
                0 => (
                    6,
                    tcp(
                        pick(rng, 3000) as u16,
                        [22, 53, 80][pick(rng, 3) as usize],
                        rng.next_u32() as u8,
                    ),
                ),
                1 => (17, vec![0, 53, 0, 53, 0, 12, 0, 0, 0xde, 0xad, 0xbe, 0xef]),
                2 => (1, vec![8, 0, 0, 0, 0, 1, 0, 1]),
                _ => (47, vec![0; 8]),
            };
            let mut f = ipv4(addr4(rng), addr4(rng), proto, &payload);
            if pick(rng, 3) == 0 {
                // Options, so that MSH-based offsets matter.
                f[14] = 0x46;
                f.splice(34..34, [1, 1, 1, 1]);
            }
            f
        }
        3 => ipv6(
            addr6(rng),
            addr6(rng),
            [6, 17, 58][pick(rng, 3) as usize],
            &tcp(1000, 1500, 2),
        ),
        4 => {
            let mut t = eth(BCAST, MAC_B, 0x8100, &[0, 7, 0x08, 0x00]);
            t.extend_from_slice(&tcp4(addr4(rng), addr4(rng))[14..]);
            t
        }
        _ => (0..pick(rng, 100)).map(|_| rng.next_u32() as u8).collect(),
    };
    let padding = pick(rng, 200) as usize;
    f.extend((0..padding).map(|_| rng.next_u32() as u8));
    for _ in 0..pick(rng, 4) {
        if !f.is_empty() {
            let i = pick(rng, f.len() as u32) as usize;
            f[i] = rng.next_u32() as u8;
        }
    }
    if pick(rng, 4) == 0 {
        let cut = pick(rng, f.len() as u32 + 1) as usize;
        f.truncate(cut);
    }
    f
}

/// Opcodes a random valid program is built from: all of classic BPF.
const VALID_CODES: &[u16] = &[
    RET | K,
    RET | A,
    LD | W | ABS,
    LD | H | ABS,
    LD | B | ABS,
    LD | W | IND,
    LD | H | IND,
    LD | B | IND,
    LD | W | LEN,
    LDX | W | LEN,
    LD | IMM,
    LDX | IMM,
    LDX | B | MSH,
    LD | MEM,
    LDX | MEM,
    ST,
    STX,
    JMP | JA,
    JMP | JEQ | K,
    JMP | JGT | K,
    JMP | JGE | K,
    JMP | JSET | K,
    JMP | JEQ | X,
    JMP | JGT | X,
    JMP | JGE | X,
    JMP | JSET | X,
    ALU | ADD | K,
    ALU | SUB | K,
    ALU | MUL | K,
    ALU | DIV | K,
    ALU | MOD | K,
    ALU | AND | K,
    ALU | OR | K,
    ALU | XOR | K,
    ALU | LSH | K,
    ALU | RSH | K,
    ALU | ADD | X,
    ALU | SUB | X,
    ALU | MUL | X,
    ALU | DIV | X,
    ALU | MOD | X,
    ALU | AND | X,
    ALU | OR | X,
    ALU | XOR | X,
    ALU | LSH | X,
    ALU | RSH | X,
    ALU | NEG,
    MISC | TAX,
    MISC | TXA,
];

/// An operand that is sometimes small (offsets into a frame, shift counts,
/// divisors), sometimes an edge value.
fn operand(rng: &mut ChaCha8Rng) -> u32 {
    match rng.next_u32() % 8 {
        0..=3 => rng.next_u32() % 80,
        4 => rng.next_u32() % 40,
        5 => [0, 1, 31, 32, 0x7fff_ffff, 0x8000_0000, u32::MAX][(rng.next_u32() % 7) as usize],
        _ => rng.next_u32(),
    }
}

/// A random instruction sequence that is usually valid: every jump in
/// range, ending with a return. Some are refused (scratch loads before
/// stores, constant division by 0, large constant shifts, huge offsets in
/// Linux's special range): the caller skips those.
fn random_program(rng: &mut ChaCha8Rng) -> Vec<Insn> {
    let n = 1 + (rng.next_u32() % 40) as usize;
    let mut insns = Vec::with_capacity(n);
    while insns.len() < n {
        let i = insns.len();
        let left = (n - i - 1) as u32; // instructions after this one
        // Now and then the idioms the interpreter fuses: a frame load, maybe
        // a mask, and an equality jump (with A used after either branch).
        if left >= 4 && rng.next_u32().is_multiple_of(5) {
            let size = [W, H, B][(rng.next_u32() % 3) as usize];
            let off = rng.next_u32() % 64;
            insns.push(Insn::stmt(LD | size | ABS, off));
            if size == W && rng.next_u32().is_multiple_of(2) {
                insns.push(Insn::stmt(ALU | AND | K, operand(rng)));
            }
            let left = (n - insns.len() - 1) as u32;
            let k = if rng.next_u32().is_multiple_of(2) {
                0
            } else {
                operand(rng)
            };
            let jt = (rng.next_u32() % left.min(4)) as u8;
            let jf = (rng.next_u32() % left.min(4)) as u8;
            insns.push(Insn::jump(JMP | JEQ | K, k, jt, jf));
            continue;
        }
        let mut code = VALID_CODES[(rng.next_u32() as usize) % VALID_CODES.len()];
        if i == n - 1 {
            code = if rng.next_u32().is_multiple_of(2) {
                RET | K
            } else {
                RET | A
            };
        }
        let mut k = operand(rng);
        let (mut jt, mut jf) = (0u8, 0u8);
        if code & 0x07 == JMP {
            if left == 0 {
                code = RET | A;
            } else if code == JMP | JA {
                k = rng.next_u32() % left;
            } else {
                let max = left.min(256);
                jt = (rng.next_u32() % max) as u8;
                jf = (rng.next_u32() % max) as u8;
            }
        }
        if matches!(code & 0xe0, 0x60) && code & 0x07 <= LDX || code == ST || code == STX {
            k %= 16;
        }
        insns.push(Insn { code, jt, jf, k });
    }
    insns
}

#[test]
fn compiled_expressions_agree_with_libpcaps_interpreter_on_random_frames() {
    let programs: Vec<Program> = EXPRESSIONS
        .iter()
        .map(|e| bpf::compile(e).unwrap())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0xb9f);
    let mut accepted = vec![0u32; programs.len()];
    for _ in 0..4000 {
        let frame = random_frame(&mut rng);
        for (i, p) in programs.iter().enumerate() {
            let ours = p.run(&frame);
            let theirs = libpcap_filter(p, &frame);
            assert_eq!(ours, theirs, "{:?} on {frame:02x?}", EXPRESSIONS[i]);
            accepted[i] += u32::from(ours != 0);
        }
    }
    // The frames exercise both outcomes of most expressions.
    let both = accepted.iter().filter(|&&n| n > 0 && n < 4000).count();
    assert!(both >= EXPRESSIONS.len() * 3 / 4, "{accepted:?}");
}

#[test]
fn generated_checks_agree_with_libpcaps_interpreter_on_random_frames() {
    let programs = [
        bpf::allow_mac(&[EthernetAddress(MAC_A)]).unwrap(),
        bpf::allow_src(&cidrs(&["10.1.0.0/30", "192.168.3.4/32", "fd00:1::/64"])).unwrap(),
        bpf::allow_dst(&cidrs(&["10.1.0.0/24", "fd00:1::/48"])).unwrap(),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..4000 {
        let frame = random_frame(&mut rng);
        for p in &programs {
            assert_eq!(
                p.run(&frame),
                libpcap_filter(p, &frame),
                "{p} on {frame:02x?}"
            );
        }
    }
}

#[test]
fn random_valid_programs_agree_with_libpcaps_interpreter() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let frames: Vec<Vec<u8>> = (0..24).map(|_| random_frame(&mut rng)).collect();
    let mut valid = 0;
    let mut nonzero = 0;
    for _ in 0..20_000 {
        let Ok(p) = Program::new(random_program(&mut rng)) else {
            continue;
        };
        valid += 1;
        for f in &frames {
            let ours = p.run(f);
            assert_eq!(ours, libpcap_filter(&p, f), "{} on {f:02x?}", p.to_line());
            nonzero += u32::from(ours != 0);
        }
    }
    assert!(valid > 5_000, "only {valid} valid programs");
    assert!(nonzero > 10_000, "only {nonzero} nonzero results");
}

#[test]
fn random_instruction_sequences_never_make_validation_or_run_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xdead);
    let frames: Vec<Vec<u8>> = (0..16).map(|_| random_frame(&mut rng)).collect();
    let mut valid = 0;
    for round in 0..50_000 {
        let n = (rng.next_u32() % 24) as usize;
        let insns: Vec<Insn> = (0..n)
            .map(|_| {
                let code = if rng.next_u32().is_multiple_of(4) {
                    rng.next_u32() as u16
                } else {
                    VALID_CODES[(rng.next_u32() as usize) % VALID_CODES.len()]
                };
                Insn {
                    code,
                    jt: (rng.next_u32() % 8) as u8,
                    jf: rng.next_u32() as u8,
                    k: operand(&mut rng),
                }
            })
            .collect();
        match Program::new(insns) {
            Ok(p) => {
                valid += 1;
                for f in &frames {
                    assert_eq!(p.run(f), libpcap_filter(&p, f));
                }
            }
            Err(e) => {
                // Every refusal explains itself.
                assert!(!e.to_string().is_empty());
            }
        }
        // The text parser too, on mangled text.
        if round % 10 == 0 {
            let text: String = (0..(rng.next_u32() % 40))
                .map(|_| b"0123456789 ,;\nx-"[(rng.next_u32() % 16) as usize] as char)
                .collect();
            if let Ok(p) = Program::from_text(&text) {
                assert_eq!(Program::from_text(&p.to_string()).unwrap(), p);
            }
        }
    }
    assert!(valid > 100, "only {valid} valid");
}
