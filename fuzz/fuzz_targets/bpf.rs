//! Fuzzes the packet filter machine: any bytes, read as instructions then a
//! frame, must be either refused by validation or run without panicking,
//! and then agree with libpcap's own interpreter. The text parser gets the
//! same bytes. Run: `cargo +nightly fuzz run bpf` (in `fuzz/`). CI runs the
//! same properties on seeded random input (`tests/bpf.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet::ifnet::bpf::{Insn, Program, libpcap_filter};

fuzz_target!(|data: &[u8]| {
    // The first byte says how many 8-byte instructions follow (code and k
    // little-endian, as in memory on the machines we run on); the rest is
    // the frame.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len() / 8);
    let (code, frame) = rest.split_at(n * 8);
    let insns: Vec<Insn> = code
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if let Ok(p) = Program::new(insns) {
        assert_eq!(p.run(frame), libpcap_filter(&p, frame));
        assert_eq!(Program::from_text(&p.to_string()).ok(), Some(p.clone()));
        assert_eq!(Program::from_text(&p.to_line()).ok(), Some(p));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Program::from_text(text)
    {
        let _ = p.run(frame);
    }
});
