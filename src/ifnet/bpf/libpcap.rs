//! The binding to libpcap: its compiler of tcpdump expressions (as the
//! Hurd's `eth-filter` used it) and its interpreter, the reference that our
//! own is tested and benchmarked against.
//!
//! A few functions through FFI rather than the `pcap` crate: that crate
//! hands out a compiled program's instructions only as text and its
//! interpreter's verdict only as a boolean (not the accepted length that a
//! differential test must compare), and builds with regex, libloading and
//! pkg-config to find libpcap's version.
//!
//! **Threads.** `pcap_compile` is safe to call from several threads at
//! once since libpcap 1.8 (its parser and optimiser keep their state in the
//! handle; pcap_compile(3PCAP) says so), and each call here opens its own
//! `pcap_t`, so error messages never mix. [`compile`] checks the version of
//! the libpcap it runs with and refuses one older than 1.8, rather than
//! serialising calls through a global lock.

use std::ffi::{CStr, CString, c_char, c_int, c_uint};

use super::{BpfError, Insn, Program};

/// `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut Insn,
}

/// `pcap_t`, only ever behind a pointer.
#[repr(C)]
struct PcapT {
    _opaque: [u8; 0],
}

const DLT_EN10MB: c_int = 1;
const SNAPLEN: c_int = 65535;
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut PcapT;
    fn pcap_close(p: *mut PcapT);
    fn pcap_compile(
        p: *mut PcapT,
        fp: *mut BpfProgram,
        text: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_geterr(p: *mut PcapT) -> *mut c_char;
    fn pcap_lib_version() -> *const c_char;
    fn bpf_filter(pc: *const Insn, pkt: *const u8, wirelen: c_uint, buflen: c_uint) -> c_uint;
}

/// A `pcap_t` for Ethernet that captures nothing, closed on drop.
struct Dead(*mut PcapT);

impl Dead {
    fn open() -> Option<Dead> {
        // SAFETY: pcap_open_dead takes plain integers and returns a new
        // handle or null (out of memory).
        let p = unsafe { pcap_open_dead(DLT_EN10MB, SNAPLEN) };
        (!p.is_null()).then_some(Dead(p))
    }

    /// The handle's last error message.
    fn error(&self) -> String {
        // SAFETY: self.0 is a live handle; pcap_geterr returns a pointer to
        // its NUL-terminated error buffer, which lives as long as the handle
        // and is copied before the handle can be closed.
        unsafe { CStr::from_ptr(pcap_geterr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Dead {
    fn drop(&mut self) {
        // SAFETY: self.0 came from pcap_open_dead and is closed only here.
        unsafe { pcap_close(self.0) }
    }
}

/// libpcap's version as (major, minor), from `pcap_lib_version()`
/// ("libpcap version 1.10.3 (with TPACKET_V3)").
fn version() -> Option<(u32, u32)> {
    // SAFETY: pcap_lib_version returns a pointer to a static NUL-terminated
    // string.
    let text = unsafe { CStr::from_ptr(pcap_lib_version()) }.to_string_lossy();
    let v = text.split("version ").nth(1)?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Compiles a tcpdump (pcap-filter(7)) expression for Ethernet frames, as
/// `tcpdump -s 65535 -ddd EXPR` does: optimised, accepting frames with
/// `ret #65535`. The netmask is unknown (a vnet has many), so `ip
/// broadcast` is refused; write `dst host 255.255.255.255` or name the
/// subnet's broadcast address. Names (`port domain`, `host NAME`) are
/// looked up by libpcap in the host's files and resolver, not the vnet's:
/// prefer numbers.
///
/// Safe to call from several threads at once (see the module's notes).
///
/// # Errors
/// [`BpfError::Compile`] with libpcap's own message (a syntax error, an
/// unknown host name...), or the reason its program is refused by
/// [`Program::new`] (`ip6 protochain` jumps backwards, for one).
pub fn compile(expr: &str) -> Result<Program, BpfError> {
    let fail = |message: String| BpfError::Compile {
        expr: expr.to_string(),
        message,
    };
    match version() {
        Some(v) if v >= (1, 8) => {}
        Some((major, minor)) => {
            return Err(fail(format!(
                "libpcap {major}.{minor} is too old: pcap_compile is thread-safe from 1.8 on"
            )));
        }
        None => return Err(fail("cannot tell libpcap's version".into())),
    }
    let text = CString::new(expr).map_err(|_| fail("contains a NUL byte".into()))?;
    let dead = Dead::open().ok_or_else(|| fail("pcap_open_dead failed".into()))?;
    let mut prog = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: dead.0 is a live handle, prog a valid bpf_program to fill in,
    // text a NUL-terminated string that outlives the call.
    let rc = unsafe { pcap_compile(dead.0, &mut prog, text.as_ptr(), 1, PCAP_NETMASK_UNKNOWN) };
    if rc != 0 {
        return Err(fail(dead.error()));
    }
    let insns = if prog.bf_insns.is_null() {
        Vec::new()
    } else {
        // SAFETY: on success libpcap filled prog with bf_len instructions at
        // bf_insns (struct bpf_insn, whose layout Insn repeats); they are
        // copied out before pcap_freecode releases them.
        unsafe { std::slice::from_raw_parts(prog.bf_insns, prog.bf_len as usize) }.to_vec()
    };
    // SAFETY: prog was filled by pcap_compile and is freed once.
    unsafe { pcap_freecode(&mut prog) };
    drop(dead);
    Program::new(insns).map_err(|e| fail(format!("libpcap's program is refused: {e}")))
}

/// Runs `program` on `frame` with libpcap's own interpreter (`bpf_filter`),
/// with the frame's length as both captured and wire length: the reference
/// that [`Program::run`] is tested and benchmarked against. Returns what
/// the program returns.
pub fn libpcap_filter(program: &Program, frame: &[u8]) -> u32 {
    let len = c_uint::try_from(frame.len()).unwrap_or(c_uint::MAX);
    // SAFETY: the program was validated by Program::new: it ends with a
    // return, its jumps land inside it, its opcodes are all ones that
    // bpf_filter knows and its scratch loads follow stores, so bpf_filter
    // (which takes no length) stays inside the instructions; it checks every
    // frame load against `len`, which is at most the slice's length.
    unsafe { bpf_filter(program.insns().as_ptr(), frame.as_ptr(), len, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpcap_is_recent_enough() {
        let v = version().expect("a version");
        assert!(v >= (1, 8), "{v:?}");
    }

    #[test]
    fn compile_errors_carry_libpcaps_message() {
        let e = compile("ip and and").unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
        let e = compile("ip broadcast").unwrap_err();
        assert!(e.to_string().contains("netmask not known"), "{e}");
        assert!(compile("ip\0").is_err());
    }
}
