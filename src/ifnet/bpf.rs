//! Packet filters: a classic BPF virtual machine, the programs that run on
//! it, and the wire stage that runs them.
//!
//! Classic BPF is the language of `tcpdump` filters, Linux socket filters
//! and the Hurd's `eth-filter`: an accumulator `A`, an index register `X`,
//! sixteen words of scratch memory `M[]`, loads from the frame, arithmetic,
//! forward jumps, and a return whose value is how much of the frame to accept
//! (0 rejects it). A program comes from one of three places:
//!
//! - a list of instructions ([`Program::new`]) or their text, in the
//!   `tcpdump -ddd` format or its one-line comma form ([`Program::from_text`]);
//! - a tcpdump expression compiled by libpcap ([`compile`]);
//! - a policy option compiled here ([`allow_mac`], [`allow_src`],
//!   [`allow_dst`]), with no libpcap involved.
//!
//! Every program is validated once, when it is made, with the rules of
//! Linux's `bpf_check_classic`; [`Program::run`] then never panics and never
//! loops, whatever the frame. Validation also decodes the instructions into
//! a form whose dispatch is one `match`, so a typical check costs tens of
//! nanoseconds per frame (BENCHMARKS.md).
//!
//! [`Filter`] is a [`LinkStage`](super::LinkStage) running an ordered list of
//! [`Check`]s on every frame; its [`FilterHandle`] reads the counters after
//! the stage has been boxed into a wire.
//!
//! Like the rest of `ifnet`, the stage and the machine read no clock and
//! hold no file descriptor. The one `unsafe` edge is the libpcap binding
//! (`bpf/libpcap.rs`), a control-plane call on a handle that opens no
//! device (`pcap_open_dead`).

mod filter;
mod generate;
mod libpcap;

use std::fmt;
use std::str::FromStr;

pub use filter::{Check, CheckStats, Filter, FilterHandle};
pub use generate::{allow_dst, allow_mac, allow_src};
pub use libpcap::{compile, libpcap_filter};

/// The most instructions a program may have (Linux's `BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Words of scratch memory (`BPF_MEMWORDS`).
pub const MEM_WORDS: u32 = 16;
/// What generated programs return to accept a frame: all of it.
pub const ACCEPT: u32 = u32::MAX;

/// Opcode parts, as in `<linux/filter.h>`: an opcode is a class ORed with a
/// size and mode (loads), an operation and source (ALU, jumps), or a return
/// value source.
pub mod code {
    /// Class: load into `A`.
    pub const LD: u16 = 0x00;
    /// Class: load into `X`.
    pub const LDX: u16 = 0x01;
    /// Class: store `A` into scratch memory.
    pub const ST: u16 = 0x02;
    /// Class: store `X` into scratch memory.
    pub const STX: u16 = 0x03;
    /// Class: arithmetic on `A`.
    pub const ALU: u16 = 0x04;
    /// Class: jump.
    pub const JMP: u16 = 0x05;
    /// Class: return.
    pub const RET: u16 = 0x06;
    /// Class: register transfers.
    pub const MISC: u16 = 0x07;

    /// Size: 32-bit word.
    pub const W: u16 = 0x00;
    /// Size: 16-bit half word.
    pub const H: u16 = 0x08;
    /// Size: byte.
    pub const B: u16 = 0x10;

    /// Mode: the constant `k`.
    pub const IMM: u16 = 0x00;
    /// Mode: the frame at offset `k`.
    pub const ABS: u16 = 0x20;
    /// Mode: the frame at offset `X + k`.
    pub const IND: u16 = 0x40;
    /// Mode: scratch memory `M[k]`.
    pub const MEM: u16 = 0x60;
    /// Mode: the frame's length.
    pub const LEN: u16 = 0x80;
    /// Mode: `4 * (frame[k] & 0xf)`, an IPv4 header length (`LDX` only).
    pub const MSH: u16 = 0xa0;

    /// ALU: `A + src`.
    pub const ADD: u16 = 0x00;
    /// ALU: `A - src`.
    pub const SUB: u16 = 0x10;
    /// ALU: `A * src`.
    pub const MUL: u16 = 0x20;
    /// ALU: `A / src`.
    pub const DIV: u16 = 0x30;
    /// ALU: `A | src`.
    pub const OR: u16 = 0x40;
    /// ALU: `A & src`.
    pub const AND: u16 = 0x50;
    /// ALU: `A << src`.
    pub const LSH: u16 = 0x60;
    /// ALU: `A >> src`.
    pub const RSH: u16 = 0x70;
    /// ALU: `-A`.
    pub const NEG: u16 = 0x80;
    /// ALU: `A % src`.
    pub const MOD: u16 = 0x90;
    /// ALU: `A ^ src`.
    pub const XOR: u16 = 0xa0;

    /// Jump: always, `k` instructions ahead.
    pub const JA: u16 = 0x00;
    /// Jump: `A == src`.
    pub const JEQ: u16 = 0x10;
    /// Jump: `A > src`.
    pub const JGT: u16 = 0x20;
    /// Jump: `A >= src`.
    pub const JGE: u16 = 0x30;
    /// Jump: `A & src != 0`.
    pub const JSET: u16 = 0x40;

    /// Source: the constant `k`.
    pub const K: u16 = 0x00;
    /// Source: `X`.
    pub const X: u16 = 0x08;
    /// Return source: `A`.
    pub const A: u16 = 0x10;

    /// Misc: `X = A`.
    pub const TAX: u16 = 0x00;
    /// Misc: `A = X`.
    pub const TXA: u16 = 0x80;
}

/// One instruction, laid out as Linux's `struct sock_filter` and libpcap's
/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// The opcode (see [`code`]).
    pub code: u16,
    /// Conditional jumps: how many instructions to skip when true.
    pub jt: u8,
    /// Conditional jumps: how many instructions to skip when false.
    pub jf: u8,
    /// The operand.
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

impl Insn {
    /// An instruction that is not a conditional jump (`BPF_STMT`).
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump (`BPF_JUMP`).
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }
}

/// Why an instruction is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not an opcode of classic BPF.
    #[error("unknown opcode {0:#06x}")]
    UnknownOpcode(u16),
    /// A jump whose target is at or past the end.
    #[error("jump lands past the end of the program")]
    JumpPastEnd,
    /// An unconditional jump with a negative offset (libpcap's
    /// `protochain` loop); classic BPF only jumps forward.
    #[error("jump goes backwards (classic BPF jumps only forward)")]
    JumpBackwards,
    /// A scratch memory index of 16 or more.
    #[error("scratch memory index {0} is out of range (0 to 15)")]
    ScratchIndex(u32),
    /// A load from scratch memory that some path reaches before any store
    /// to it.
    #[error("reads scratch memory M[{0}] before every path has stored to it")]
    ScratchUnset(u32),
    /// `A / 0`.
    #[error("division by constant zero")]
    DivisionByZero,
    /// `A % 0`.
    #[error("modulo by constant zero")]
    ModuloByZero,
    /// A shift by a constant of 32 or more.
    #[error("shift by constant {0}; it must be below 32")]
    ShiftTooLarge(u32),
    /// A load at `SKF_AD_OFF + n`: Linux socket metadata (protocol, VLAN tag,
    /// CPU...), which frames on a wire do not carry.
    #[error(
        "Linux ancillary load (SKF_AD_OFF + {0}) is not supported: frames on a wire carry no socket metadata"
    )]
    Ancillary(u32),
    /// A load at `SKF_NET_OFF + n` (relative to the network header).
    #[error("Linux network-header offset (SKF_NET_OFF + {0}) is not supported")]
    NetOffset(u32),
    /// A load at `SKF_LL_OFF + n` (relative to the link-layer header).
    #[error("Linux link-layer offset (SKF_LL_OFF + {0}) is not supported")]
    LinkOffset(u32),
    /// The program does not end with a return.
    #[error("the last instruction must be a return")]
    NoReturn,
}

/// Why a program could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// No instructions.
    #[error("program is empty")]
    Empty,
    /// More than [`MAX_INSNS`] instructions.
    #[error("program has {0} instructions; at most 4096 are allowed")]
    TooLong(usize),
    /// An instruction is refused.
    #[error("instruction {index}: {problem}")]
    Invalid {
        /// Its index, from 0.
        index: usize,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The text form does not parse.
    #[error("program text, entry {entry}: {reason}")]
    Text {
        /// The entry (line, or comma- or semicolon-separated item) from 1;
        /// entry 1 is the instruction count.
        entry: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// libpcap could not compile a tcpdump expression, or its program was
    /// refused.
    #[error("tcpdump expression {expr:?}: {message}")]
    Compile {
        /// The expression.
        expr: String,
        /// libpcap's error text, or why its program was refused.
        message: String,
    },
}

/// Linux's special offsets for `LD ABS` and `LD IND` (`<linux/filter.h>`),
/// as signed values.
const SKF_AD_OFF: i32 = -0x1000;
const SKF_NET_OFF: i32 = -0x10_0000;
const SKF_LL_OFF: i32 = -0x20_0000;

/// A decoded instruction. Jump targets are absolute indices, already
/// checked to lie inside the program; scratch indices are below 16; constant
/// divisors are not zero and constant shifts are below 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    RetK(u32),
    RetA,
    LdW(u32),
    LdH(u32),
    LdB(u32),
    LdIndW(u32),
    LdIndH(u32),
    LdIndB(u32),
    LdLen,
    LdxLen,
    LdImm(u32),
    LdxImm(u32),
    LdxMsh(u32),
    LdMem(u8),
    LdxMem(u8),
    St(u8),
    Stx(u8),
    Ja(u16),
    JeqK(u32, u16, u16),
    JgtK(u32, u16, u16),
    JgeK(u32, u16, u16),
    JsetK(u32, u16, u16),
    JeqX(u16, u16),
    JgtX(u16, u16),
    JgeX(u16, u16),
    JsetX(u16, u16),
    AddK(u32),
    SubK(u32),
    MulK(u32),
    DivK(u32),
    ModK(u32),
    AndK(u32),
    OrK(u32),
    XorK(u32),
    LshK(u32),
    RshK(u32),
    AddX,
    SubX,
    MulX,
    DivX,
    ModX,
    AndX,
    OrX,
    XorX,
    LshX,
    RshX,
    Neg,
    Tax,
    Txa,
    // Superinstructions: a load from the frame and the conditional jump
    // after it (and for a prefix, the mask between), in the slot of the
    // load. The slots after it keep their own ops for jumps that land
    // there, so jump targets need no renumbering.
    LdHJeq(u32, u32, u16, u16),
    LdWJeq(u32, u32, u16, u16),
    LdBJeq(u32, u32, u16, u16),
    LdWAndJeq(u32, u32, u32, u16, u16),
}

/// A validated classic BPF program.
///
/// Made by [`Program::new`] (or the text parser, [`compile`], or the
/// generators), so every `Program` satisfies the validation rules and
/// [`run`](Program::run) cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    ops: Vec<Op>,
}

/// Where a jump `skip` instructions after `index` lands, if inside a
/// program of `len` instructions.
fn target(index: usize, skip: u64, len: usize) -> Result<u16, Problem> {
    let to = index as u64 + 1 + skip;
    if to >= len as u64 {
        return Err(Problem::JumpPastEnd);
    }
    // len <= MAX_INSNS, which fits.
    Ok(to as u16)
}

fn scratch(k: u32) -> Result<u8, Problem> {
    if k < MEM_WORDS {
        Ok(k as u8)
    } else {
        Err(Problem::ScratchIndex(k))
    }
}

/// Refuses Linux's negative special offsets; any other offset is a plain
/// (possibly out-of-bounds) frame offset.
fn frame_offset(k: u32) -> Result<u32, Problem> {
    let s = k as i32;
    if (SKF_AD_OFF..0).contains(&s) {
        Err(Problem::Ancillary((s - SKF_AD_OFF) as u32))
    } else if (SKF_NET_OFF..SKF_AD_OFF).contains(&s) {
        Err(Problem::NetOffset((s - SKF_NET_OFF) as u32))
    } else if (SKF_LL_OFF..SKF_NET_OFF).contains(&s) {
        Err(Problem::LinkOffset((s - SKF_LL_OFF) as u32))
    } else {
        Ok(k)
    }
}

/// Decodes one instruction at `index` of a program of `len` instructions.
fn decode(insn: Insn, index: usize, len: usize) -> Result<Op, Problem> {
    use code::*;
    let Insn { code, jt, jf, k } = insn;
    let cond = |op: fn(u32, u16, u16) -> Op| -> Result<Op, Problem> {
        Ok(op(
            k,
            target(index, jt.into(), len)?,
            target(index, jf.into(), len)?,
        ))
    };
    let cond_x = |op: fn(u16, u16) -> Op| -> Result<Op, Problem> {
        Ok(op(
            target(index, jt.into(), len)?,
            target(index, jf.into(), len)?,
        ))
    };
    const LD_W_ABS: u16 = LD | W | ABS;
    const LD_H_ABS: u16 = LD | H | ABS;
    const LD_B_ABS: u16 = LD | B | ABS;
    const LD_W_IND: u16 = LD | W | IND;
    const LD_H_IND: u16 = LD | H | IND;
    const LD_B_IND: u16 = LD | B | IND;
    const LD_W_LEN: u16 = LD | W | LEN;
    const LDX_W_LEN: u16 = LDX | W | LEN;
    const LD_IMM: u16 = LD | IMM;
    const LDX_IMM: u16 = LDX | IMM;
    const LDX_MSH: u16 = LDX | B | MSH;
    const LD_MEM: u16 = LD | MEM;
    const LDX_MEM: u16 = LDX | MEM;
    const RET_K: u16 = RET | K;
    const RET_A: u16 = RET | A;
    const JMP_JA: u16 = JMP | JA;
    const JEQ_K: u16 = JMP | JEQ | K;
    const JGT_K: u16 = JMP | JGT | K;
    const JGE_K: u16 = JMP | JGE | K;
    const JSET_K: u16 = JMP | JSET | K;
    const JEQ_X: u16 = JMP | JEQ | X;
    const JGT_X: u16 = JMP | JGT | X;
    const JGE_X: u16 = JMP | JGE | X;
    const JSET_X: u16 = JMP | JSET | X;
    const ADD_K: u16 = ALU | ADD | K;
    const SUB_K: u16 = ALU | SUB | K;
    const MUL_K: u16 = ALU | MUL | K;
    const DIV_K: u16 = ALU | DIV | K;
    const MOD_K: u16 = ALU | MOD | K;
    const AND_K: u16 = ALU | AND | K;
    const OR_K: u16 = ALU | OR | K;
    const XOR_K: u16 = ALU | XOR | K;
    const LSH_K: u16 = ALU | LSH | K;
    const RSH_K: u16 = ALU | RSH | K;
    const ADD_X: u16 = ALU | ADD | X;
    const SUB_X: u16 = ALU | SUB | X;
    const MUL_X: u16 = ALU | MUL | X;
    const DIV_X: u16 = ALU | DIV | X;
    const MOD_X: u16 = ALU | MOD | X;
    const AND_X: u16 = ALU | AND | X;
    const OR_X: u16 = ALU | OR | X;
    const XOR_X: u16 = ALU | XOR | X;
    const LSH_X: u16 = ALU | LSH | X;
    const RSH_X: u16 = ALU | RSH | X;
    const ALU_NEG: u16 = ALU | NEG;
    const MISC_TAX: u16 = MISC | TAX;
    const MISC_TXA: u16 = MISC | TXA;
    Ok(match code {
        RET_K => Op::RetK(k),
        RET_A => Op::RetA,
        LD_W_ABS => Op::LdW(frame_offset(k)?),
        LD_H_ABS => Op::LdH(frame_offset(k)?),
        LD_B_ABS => Op::LdB(frame_offset(k)?),
        LD_W_IND => Op::LdIndW(frame_offset(k)?),
        LD_H_IND => Op::LdIndH(frame_offset(k)?),
        LD_B_IND => Op::LdIndB(frame_offset(k)?),
        LD_W_LEN => Op::LdLen,
        LDX_W_LEN => Op::LdxLen,
        LD_IMM => Op::LdImm(k),
        LDX_IMM => Op::LdxImm(k),
        LDX_MSH => Op::LdxMsh(k),
        LD_MEM => Op::LdMem(scratch(k)?),
        LDX_MEM => Op::LdxMem(scratch(k)?),
        ST => Op::St(scratch(k)?),
        STX => Op::Stx(scratch(k)?),
        JMP_JA => {
            if (k as i32) < 0 {
                return Err(Problem::JumpBackwards);
            }
            Op::Ja(target(index, k.into(), len)?)
        }
        JEQ_K => cond(Op::JeqK)?,
        JGT_K => cond(Op::JgtK)?,
        JGE_K => cond(Op::JgeK)?,
        JSET_K => cond(Op::JsetK)?,
        JEQ_X => cond_x(Op::JeqX)?,
        JGT_X => cond_x(Op::JgtX)?,
        JGE_X => cond_x(Op::JgeX)?,
        JSET_X => cond_x(Op::JsetX)?,
        ADD_K => Op::AddK(k),
        SUB_K => Op::SubK(k),
        MUL_K => Op::MulK(k),
        DIV_K if k == 0 => return Err(Problem::DivisionByZero),
        DIV_K => Op::DivK(k),
        MOD_K if k == 0 => return Err(Problem::ModuloByZero),
        MOD_K => Op::ModK(k),
        AND_K => Op::AndK(k),
        OR_K => Op::OrK(k),
        XOR_K => Op::XorK(k),
        LSH_K | RSH_K if k >= 32 => return Err(Problem::ShiftTooLarge(k)),
        LSH_K => Op::LshK(k),
        RSH_K => Op::RshK(k),
        ADD_X => Op::AddX,
        SUB_X => Op::SubX,
        MUL_X => Op::MulX,
        DIV_X => Op::DivX,
        MOD_X => Op::ModX,
        AND_X => Op::AndX,
        OR_X => Op::OrX,
        XOR_X => Op::XorX,
        LSH_X => Op::LshX,
        RSH_X => Op::RshX,
        ALU_NEG => Op::Neg,
        MISC_TAX => Op::Tax,
        MISC_TXA => Op::Txa,
        other => return Err(Problem::UnknownOpcode(other)),
    })
}

/// Checks that every scratch load reads a word that every path to it has
/// stored (Linux's `check_load_and_stores`). Jumps only go forward, so one
/// pass in order sees every predecessor of an instruction before it.
fn check_scratch(ops: &[Op]) -> Result<(), BpfError> {
    const ALL: u16 = u16::MAX;
    // For each instruction, the words stored on every jump reaching it.
    let mut at = vec![ALL; ops.len()];
    // The words stored on the fall-through path; ALL after an instruction
    // that never falls through, as no path comes that way.
    let mut valid: u16 = 0;
    for (index, op) in ops.iter().enumerate() {
        valid &= at[index];
        let mut jump = |to: u16, valid: u16| at[usize::from(to)] &= valid;
        match *op {
            Op::St(i) | Op::Stx(i) => valid |= 1 << i,
            Op::LdMem(i) | Op::LdxMem(i) if valid & (1 << i) == 0 => {
                return Err(BpfError::Invalid {
                    index,
                    problem: Problem::ScratchUnset(i.into()),
                });
            }
            Op::Ja(to) => {
                jump(to, valid);
                valid = ALL;
            }
            Op::JeqK(_, t, f)
            | Op::JgtK(_, t, f)
            | Op::JgeK(_, t, f)
            | Op::JsetK(_, t, f)
            | Op::JeqX(t, f)
            | Op::JgtX(t, f)
            | Op::JgeX(t, f)
            | Op::JsetX(t, f) => {
                jump(t, valid);
                jump(f, valid);
                valid = ALL;
            }
            Op::RetK(_) | Op::RetA => valid = ALL,
            _ => {}
        }
    }
    Ok(())
}

/// Replaces each frame load followed by an equality jump (libpcap's and
/// the generators' commonest pair) with one op doing both, so that the
/// interpreter dispatches once instead of two or three times.
fn fuse(ops: Vec<Op>) -> Vec<Op> {
    let mut out = ops.clone();
    for (i, slot) in out.iter_mut().enumerate() {
        let next = ops.get(i + 1).copied();
        let after = ops.get(i + 2).copied();
        *slot = match (ops[i], next, after) {
            (Op::LdW(off), Some(Op::AndK(mask)), Some(Op::JeqK(k, t, f))) => {
                Op::LdWAndJeq(off, mask, k, t, f)
            }
            (Op::LdW(off), Some(Op::JeqK(k, t, f)), _) => Op::LdWJeq(off, k, t, f),
            (Op::LdH(off), Some(Op::JeqK(k, t, f)), _) => Op::LdHJeq(off, k, t, f),
            (Op::LdB(off), Some(Op::JeqK(k, t, f)), _) => Op::LdBJeq(off, k, t, f),
            (op, _, _) => op,
        };
    }
    out
}

/// The word at `off`, if the frame holds it.
#[inline(always)]
fn word(frame: &[u8], off: usize) -> Option<u32> {
    frame
        .get(off..)?
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
}

/// The half word at `off`, if the frame holds it.
#[inline(always)]
fn half(frame: &[u8], off: usize) -> Option<u32> {
    frame
        .get(off..)?
        .first_chunk::<2>()
        .map(|b| u16::from_be_bytes(*b).into())
}

/// The byte at `off`, if the frame holds it.
#[inline(always)]
fn byte(frame: &[u8], off: usize) -> Option<u32> {
    frame.get(off).map(|b| (*b).into())
}

/// `X + k` as a frame offset, without wrapping.
#[inline(always)]
fn ind(x: u32, k: u32) -> usize {
    // Both are below 2^32: the sum fits a 64-bit usize, and on a 32-bit
    // target saturating keeps it out of bounds.
    usize::try_from(u64::from(x) + u64::from(k)).unwrap_or(usize::MAX)
}

impl Program {
    /// Validates `insns` and makes a program of them.
    ///
    /// The rules are Linux's (`bpf_check_classic`): 1 to 4096 instructions;
    /// every opcode one of classic BPF's (the same set as libpcap's
    /// interpreter and Linux's checker, so `RET X`, `NEG X` and the like are
    /// refused); jumps land inside the program (they can only go forward;
    /// an unconditional jump with a negative offset, as libpcap's
    /// `protochain` emits, is refused); scratch indices below 16, and no
    /// scratch load before every path to it has stored that word; no
    /// division or modulo by a constant 0; no shift by a constant of 32 or
    /// more (as Linux, and libpcap's validator; a shift by `X` of 32 or more
    /// is allowed and yields 0, as in libpcap); no Linux special offsets
    /// (`SKF_AD_OFF`, `SKF_NET_OFF`, `SKF_LL_OFF`: the frames here carry no
    /// socket metadata); and the last instruction is a return.
    ///
    /// # Errors
    /// [`BpfError::Empty`], [`BpfError::TooLong`], or
    /// [`BpfError::Invalid`] naming the first instruction refused.
    pub fn new(insns: Vec<Insn>) -> Result<Program, BpfError> {
        let len = insns.len();
        if len == 0 {
            return Err(BpfError::Empty);
        }
        if len > MAX_INSNS {
            return Err(BpfError::TooLong(len));
        }
        let ops = insns
            .iter()
            .enumerate()
            .map(|(index, insn)| {
                decode(*insn, index, len).map_err(|problem| BpfError::Invalid { index, problem })
            })
            .collect::<Result<Vec<Op>, BpfError>>()?;
        if !matches!(ops[len - 1], Op::RetK(_) | Op::RetA) {
            return Err(BpfError::Invalid {
                index: len - 1,
                problem: Problem::NoReturn,
            });
        }
        check_scratch(&ops)?;
        Ok(Program {
            insns,
            ops: fuse(ops),
        })
    }

    /// The instructions, as given.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Runs the program on `frame` and returns how many bytes of it to
    /// accept: 0 rejects the frame.
    ///
    /// The frame's length is both its captured and its wire length. As in
    /// libpcap and Linux, a load beyond the end of the frame, or a division
    /// or modulo by `X` when `X` is 0, ends the program with 0; arithmetic
    /// wraps; a shift by `X` of 32 or more yields 0; `A`, `X` and the
    /// scratch memory start at 0. Never panics: the program was validated
    /// when it was made.
    pub fn run(&self, frame: &[u8]) -> u32 {
        let wirelen = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let ops = &self.ops[..];
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEM_WORDS as usize];
        let mut pc = 0usize;
        macro_rules! load {
            ($e:expr) => {
                match $e {
                    Some(v) => v,
                    None => return 0,
                }
            };
        }
        macro_rules! branch {
            ($cond:expr, $t:expr, $f:expr) => {
                pc = usize::from(if $cond { $t } else { $f })
            };
        }
        loop {
            // Validation keeps pc inside the program and ends it with a
            // return; `get` only makes that impossible to get wrong.
            let Some(&op) = ops.get(pc) else { return 0 };
            pc += 1;
            match op {
                Op::RetK(k) => return k,
                Op::RetA => return a,
                Op::LdW(k) => a = load!(word(frame, k as usize)),
                Op::LdH(k) => a = load!(half(frame, k as usize)),
                Op::LdB(k) => a = load!(byte(frame, k as usize)),
                Op::LdIndW(k) => a = load!(word(frame, ind(x, k))),
                Op::LdIndH(k) => a = load!(half(frame, ind(x, k))),
                Op::LdIndB(k) => a = load!(byte(frame, ind(x, k))),
                Op::LdLen => a = wirelen,
                Op::LdxLen => x = wirelen,
                Op::LdImm(k) => a = k,
                Op::LdxImm(k) => x = k,
                Op::LdxMsh(k) => x = (load!(byte(frame, k as usize)) & 0xf) << 2,
                Op::LdMem(i) => a = mem[usize::from(i) & 15],
                Op::LdxMem(i) => x = mem[usize::from(i) & 15],
                Op::St(i) => mem[usize::from(i) & 15] = a,
                Op::Stx(i) => mem[usize::from(i) & 15] = x,
                Op::Ja(t) => pc = usize::from(t),
                Op::JeqK(k, t, f) => branch!(a == k, t, f),
                Op::JgtK(k, t, f) => branch!(a > k, t, f),
                Op::JgeK(k, t, f) => branch!(a >= k, t, f),
                Op::JsetK(k, t, f) => branch!(a & k != 0, t, f),
                Op::JeqX(t, f) => branch!(a == x, t, f),
                Op::JgtX(t, f) => branch!(a > x, t, f),
                Op::JgeX(t, f) => branch!(a >= x, t, f),
                Op::JsetX(t, f) => branch!(a & x != 0, t, f),
                Op::AddK(k) => a = a.wrapping_add(k),
                Op::SubK(k) => a = a.wrapping_sub(k),
                Op::MulK(k) => a = a.wrapping_mul(k),
                Op::DivK(k) => a = load!(a.checked_div(k)),
                Op::ModK(k) => a = load!(a.checked_rem(k)),
                Op::AndK(k) => a &= k,
                Op::OrK(k) => a |= k,
                Op::XorK(k) => a ^= k,
                Op::LshK(k) => a = a.checked_shl(k).unwrap_or(0),
                Op::RshK(k) => a = a.checked_shr(k).unwrap_or(0),
                Op::AddX => a = a.wrapping_add(x),
                Op::SubX => a = a.wrapping_sub(x),
                Op::MulX => a = a.wrapping_mul(x),
                Op::DivX => a = load!(a.checked_div(x)),
                Op::ModX => a = load!(a.checked_rem(x)),
                Op::AndX => a &= x,
                Op::OrX => a |= x,
                Op::XorX => a ^= x,
                Op::LshX => a = a.checked_shl(x).unwrap_or(0),
                Op::RshX => a = a.checked_shr(x).unwrap_or(0),
                Op::Neg => a = a.wrapping_neg(),
                Op::Tax => x = a,
                Op::Txa => a = x,
                Op::LdHJeq(off, k, t, f) => {
                    a = load!(half(frame, off as usize));
                    branch!(a == k, t, f)
                }
                Op::LdWJeq(off, k, t, f) => {
                    a = load!(word(frame, off as usize));
                    branch!(a == k, t, f)
                }
                Op::LdBJeq(off, k, t, f) => {
                    a = load!(byte(frame, off as usize));
                    branch!(a == k, t, f)
                }
                Op::LdWAndJeq(off, mask, k, t, f) => {
                    a = load!(word(frame, off as usize)) & mask;
                    branch!(a == k, t, f)
                }
            }
        }
    }

    /// Parses a program in the `tcpdump -ddd` format: the instruction count,
    /// then one instruction per entry as four numbers `code jt jf k`.
    /// Entries are separated by newlines, commas or semicolons (the
    /// one-line form of `iptables -m bpf --bytecode` and `nft`), numbers by
    /// spaces or tabs. Numbers are decimal or `0x` hexadecimal; `k` may also
    /// be a negative 32-bit number. Empty entries are ignored.
    ///
    /// # Errors
    /// [`BpfError::Text`] naming the entry that does not parse or the count
    /// that does not match, or the validation errors of [`Program::new`].
    pub fn from_text(text: &str) -> Result<Program, BpfError> {
        let mut entries = text
            .split(['\n', ',', ';'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
            .map(|(i, e)| (i + 1, e));
        let bad = |entry: usize, reason: String| BpfError::Text { entry, reason };
        let Some((_, first)) = entries.next() else {
            return Err(bad(1, "no instruction count".into()));
        };
        let count: usize = parse_num(first, u32::MAX.into())
            .map_err(|why| bad(1, format!("instruction count {first:?}: {why}")))?
            as usize;
        if count > MAX_INSNS {
            return Err(BpfError::TooLong(count));
        }
        let mut insns = Vec::with_capacity(count);
        for (entry, e) in entries {
            let fields: Vec<&str> = e.split_whitespace().collect();
            let [c, jt, jf, k] = fields[..] else {
                return Err(bad(
                    entry,
                    format!("{e:?}: expected four numbers (code jt jf k)"),
                ));
            };
            let field = |name: &str, s: &str, max: u64| {
                parse_num(s, max).map_err(|why| bad(entry, format!("{name} {s:?}: {why}")))
            };
            let k = match k.strip_prefix('-') {
                Some(neg) => (field("k", neg, 1 << 31)? as u32).wrapping_neg(),
                None => field("k", k, u32::MAX.into())? as u32,
            };
            insns.push(Insn {
                code: field("code", c, u16::MAX.into())? as u16,
                jt: field("jt", jt, u8::MAX.into())? as u8,
                jf: field("jf", jf, u8::MAX.into())? as u8,
                k,
            });
            if insns.len() > count {
                return Err(bad(
                    entry,
                    format!("the count says {count} instructions but more follow"),
                ));
            }
        }
        if insns.len() != count {
            return Err(bad(
                insns.len() + 2,
                format!(
                    "the count says {count} instructions but {} follow",
                    insns.len()
                ),
            ));
        }
        Program::new(insns)
    }

    /// The one-line form: `count,code jt jf k,...` (as `iptables -m bpf
    /// --bytecode` takes it). [`Program::from_text`] reads it back; the
    /// `Display` form is `tcpdump -ddd`'s.
    pub fn to_line(&self) -> String {
        let mut s = self.insns.len().to_string();
        for i in &self.insns {
            s.push_str(&format!(",{} {} {} {}", i.code, i.jt, i.jf, i.k));
        }
        s
    }
}

/// A decimal or `0x` hexadecimal number no larger than `max`.
fn parse_num(s: &str, max: u64) -> Result<u64, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|_| "not a number".to_string())?;
    if v > max {
        return Err(format!("larger than {max}"));
    }
    Ok(v)
}

/// `tcpdump -ddd`'s format: the count, then `code jt jf k` per line.
impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.insns.len())?;
        for i in &self.insns {
            writeln!(f, "{} {} {} {}", i.code, i.jt, i.jf, i.k)?;
        }
        Ok(())
    }
}

impl FromStr for Program {
    type Err = BpfError;
    fn from_str(s: &str) -> Result<Program, BpfError> {
        Program::from_text(s)
    }
}

#[cfg(test)]
mod tests {
    use super::code::*;
    use super::*;

    fn prog(insns: &[Insn]) -> Result<Program, BpfError> {
        Program::new(insns.to_vec())
    }

    #[test]
    fn a_program_returns_its_constant() {
        let p = prog(&[Insn::stmt(RET | K, 42)]).unwrap();
        assert_eq!(p.run(&[]), 42);
    }

    #[test]
    fn loads_are_big_endian_and_bounded() {
        let p = prog(&[Insn::stmt(LD | W | ABS, 1), Insn::stmt(RET | A, 0)]).unwrap();
        assert_eq!(p.run(&[0, 1, 2, 3, 4]), 0x0102_0304);
        assert_eq!(p.run(&[0, 1, 2, 3]), 0, "one byte short");
        let p = prog(&[
            Insn::stmt(LDX | IMM, u32::MAX),
            Insn::stmt(LD | B | IND, 2),
            Insn::stmt(RET | A, 0),
        ])
        .unwrap();
        assert_eq!(p.run(&[9; 8]), 0, "X + k does not wrap around to 1");
    }

    #[test]
    fn msh_reads_an_ipv4_header_length() {
        let p = prog(&[
            Insn::stmt(LDX | B | MSH, 0),
            Insn::stmt(MISC | TXA, 0),
            Insn::stmt(RET | A, 0),
        ])
        .unwrap();
        assert_eq!(p.run(&[0x45]), 20);
    }

    #[test]
    fn division_by_x_zero_rejects() {
        let p = prog(&[
            Insn::stmt(LD | IMM, 7),
            Insn::stmt(ALU | DIV | X, 0),
            Insn::stmt(RET | K, 1),
        ])
        .unwrap();
        assert_eq!(p.run(&[]), 0);
    }

    #[test]
    fn shifts_by_x_of_32_or_more_yield_zero() {
        let p = prog(&[
            Insn::stmt(LD | IMM, 1),
            Insn::stmt(LDX | IMM, 33),
            Insn::stmt(ALU | LSH | X, 0),
            Insn::stmt(ALU | ADD | K, 5),
            Insn::stmt(RET | A, 0),
        ])
        .unwrap();
        assert_eq!(p.run(&[]), 5);
    }

    #[test]
    fn scratch_reads_need_a_store_on_every_path() {
        // ld #1; jeq #1, 0, 1; st M[0]; ld M[0]; ret a: the false path skips
        // the store.
        let e = prog(&[
            Insn::stmt(LD | IMM, 1),
            Insn::jump(JMP | JEQ | K, 1, 0, 1),
            Insn::stmt(ST, 0),
            Insn::stmt(LD | MEM, 0),
            Insn::stmt(RET | A, 0),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            BpfError::Invalid {
                index: 3,
                problem: Problem::ScratchUnset(0)
            }
        );
        let p = prog(&[
            Insn::stmt(LD | IMM, 9),
            Insn::stmt(ST, 3),
            Insn::jump(JMP | JEQ | K, 1, 0, 1),
            Insn::stmt(ST, 0),
            Insn::stmt(LD | MEM, 3),
            Insn::stmt(RET | A, 0),
        ])
        .unwrap();
        assert_eq!(p.run(&[]), 9);
    }

    #[test]
    fn text_round_trips() {
        let p: Program = "4\n40 0 0 12\n21 0 1 2048\n6 0 0 65535\n6 0 0 0\n"
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "4\n40 0 0 12\n21 0 1 2048\n6 0 0 65535\n6 0 0 0\n"
        );
        assert_eq!(p.to_line(), "4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0");
        assert_eq!(Program::from_text(&p.to_line()).unwrap(), p);
        let q = Program::from_text("2; 0x28 0 0 0xc; 6 0 0 -1").unwrap();
        assert_eq!(q.insns()[0], Insn::stmt(LD | H | ABS, 12));
        assert_eq!(q.insns()[1].k, u32::MAX);
    }

    #[test]
    fn text_errors_name_the_entry() {
        let e = Program::from_text("2,40 0 0 12,6 0 0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "program text, entry 3: \"6 0 0\": expected four numbers (code jt jf k)"
        );
        let e = Program::from_text("3\n40 0 0 12\n6 0 0 0\n").unwrap_err();
        assert!(e.to_string().contains("the count says 3"), "{e}");
        let e = Program::from_text("1\n6 256 0 0").unwrap_err();
        assert!(e.to_string().contains("jt \"256\": larger than 255"), "{e}");
        assert!(Program::from_text(" \n").is_err());
    }
}
