//! The filter stage: an ordered list of checks on a wire, the first that
//! rejects a frame dropping it for its reason, with counters readable from
//! outside the wire.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr};

use super::{BpfError, Program};
use crate::ifnet::{LinkStage, StageReport, Verdict};

/// One check: a program and the reason a frame it rejects is dropped for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    reason: &'static str,
    text: String,
    program: Program,
}

impl Check {
    /// The reason of [`Check::allow_mac`].
    pub const MAC: &'static str = "source MAC not allowed";
    /// The reason of [`Check::allow_src`].
    pub const SRC: &'static str = "source IP not allowed";
    /// The reason of [`Check::allow_dst`].
    pub const DST: &'static str = "destination not allowed";
    /// The reason of [`Check::expression`].
    pub const EXPRESSION: &'static str = "filter expression not matched";
    /// The reason of [`Check::from_text`].
    pub const PROGRAM: &'static str = "filter program rejected";

    /// A check of any program; `text` describes it in listings.
    pub fn new(reason: &'static str, text: impl Into<String>, program: Program) -> Check {
        Check {
            reason,
            text: text.into(),
            program,
        }
    }

    /// A tcpdump expression, compiled by libpcap ([`super::compile`]).
    ///
    /// # Errors
    /// libpcap's error, as [`BpfError::Compile`].
    pub fn expression(expr: &str) -> Result<Check, BpfError> {
        Ok(Check::new(Check::EXPRESSION, expr, super::compile(expr)?))
    }

    /// A program given as text ([`Program::from_text`]); listed in its
    /// one-line form.
    ///
    /// # Errors
    /// Why the text or the program is refused.
    pub fn from_text(text: &str) -> Result<Check, BpfError> {
        let p = Program::from_text(text)?;
        Ok(Check::new(Check::PROGRAM, p.to_line(), p))
    }

    /// [`super::allow_mac`], listed as `allow-mac MAC,...`.
    ///
    /// # Errors
    /// The list is too long for one program.
    pub fn allow_mac(macs: &[EthernetAddress]) -> Result<Check, BpfError> {
        let text = macs
            .iter()
            .map(|m| {
                let b = m.as_bytes();
                format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    b[0], b[1], b[2], b[3], b[4], b[5]
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let text = format!("allow-mac {text}");
        Ok(Check::new(Check::MAC, text, super::allow_mac(macs)?))
    }

    /// [`super::allow_src`], listed as `allow-src PREFIX,...`.
    ///
    /// # Errors
    /// The list is too long for one program.
    pub fn allow_src(cidrs: &[IpCidr]) -> Result<Check, BpfError> {
        let text = format!("allow-src {}", join(cidrs));
        Ok(Check::new(Check::SRC, text, super::allow_src(cidrs)?))
    }

    /// [`super::allow_dst`], listed as `allow-dst PREFIX,...`.
    ///
    /// # Errors
    /// The list is too long for one program.
    pub fn allow_dst(cidrs: &[IpCidr]) -> Result<Check, BpfError> {
        let text = format!("allow-dst {}", join(cidrs));
        Ok(Check::new(Check::DST, text, super::allow_dst(cidrs)?))
    }

    /// Why a frame this check rejects is dropped.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// What the check is, for listings (the expression or the options).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its program.
    pub fn program(&self) -> &Program {
        &self.program
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the stage and its handles share.
#[derive(Debug)]
struct Shared {
    name: String,
    checks: Vec<(&'static str, String)>,
    passed: AtomicU64,
    /// Per check, in order.
    dropped: Box<[AtomicU64]>,
}

/// A wire stage running checks on every frame, in order: the first that
/// returns 0 drops the frame with [`Verdict::Drop`] and its reason; a frame
/// every check accepts passes. No checks: everything passes.
#[derive(Debug)]
pub struct Filter {
    programs: Vec<(&'static str, Program)>,
    shared: Arc<Shared>,
}

/// The outside view of a [`Filter`] once it is on a wire: its name, its
/// checks and its counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FilterHandle {
    shared: Arc<Shared>,
}

/// One check of a filter as listed by [`FilterHandle::checks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStats {
    /// Why it drops frames.
    pub reason: &'static str,
    /// What it is (the expression or the options).
    pub text: String,
    /// Frames it dropped.
    pub dropped: u64,
}

impl Filter {
    /// A filter called `name` (for listings) running `checks` in order, and
    /// the handle that reads its counters.
    pub fn new(name: String, checks: Vec<Check>) -> (Filter, FilterHandle) {
        let shared = Arc::new(Shared {
            name,
            checks: checks.iter().map(|c| (c.reason, c.text.clone())).collect(),
            passed: AtomicU64::new(0),
            dropped: checks.iter().map(|_| AtomicU64::new(0)).collect(),
        });
        let programs = checks.into_iter().map(|c| (c.reason, c.program)).collect();
        (
            Filter {
                programs,
                shared: Arc::clone(&shared),
            },
            FilterHandle { shared },
        )
    }

    /// A handle on this filter's counters.
    pub fn handle(&self) -> FilterHandle {
        FilterHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Adds one to a counter that only the stage writes. The stage is not
/// `Clone` and `process` takes `&mut self`, so there is one writer at a
/// time (the wire's lock orders successive ones): a plain load and store
/// is enough, and cheaper than an atomic read-modify-write on the data
/// path. Readers see a value at most a frame old.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

impl LinkStage for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn process(&mut self, _now: Instant, frame: &[u8]) -> Verdict {
        for (i, (reason, program)) in self.programs.iter().enumerate() {
            if program.run(frame) == 0 {
                if let Some(c) = self.shared.dropped.get(i) {
                    bump(c);
                }
                return Verdict::Drop(reason);
            }
        }
        bump(&self.shared.passed);
        Verdict::Pass
    }

    fn report(&self) -> Option<StageReport> {
        let h = self.handle();
        Some(StageReport {
            kind: "filter",
            name: h.name().to_string(),
            description: h
                .checks()
                .iter()
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
                .join("; "),
            passed: h.passed(),
            drops: h.drops(),
            checks: h.checks().into_iter().map(|c| (c.reason, c.text)).collect(),
        })
    }
}

impl FilterHandle {
    /// The filter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Frames that passed every check.
    pub fn passed(&self) -> u64 {
        self.shared.passed.load(Ordering::Relaxed)
    }

    /// Frames dropped, per reason, in the order the checks come (checks
    /// sharing a reason are added up; reasons with no drops are listed with
    /// 0).
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for ((reason, _), n) in self.shared.checks.iter().zip(self.shared.dropped.iter()) {
            let n = n.load(Ordering::Relaxed);
            match out.iter_mut().find(|(r, _)| r == reason) {
                Some((_, total)) => *total += n,
                None => out.push((reason, n)),
            }
        }
        out
    }

    /// The checks in order, each with its description and drops.
    pub fn checks(&self) -> Vec<CheckStats> {
        self.shared
            .checks
            .iter()
            .zip(self.shared.dropped.iter())
            .map(|((reason, text), n)| CheckStats {
                reason,
                text: text.clone(),
                dropped: n.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifnet::bpf::{Insn, code};

    fn constant(k: u32) -> Program {
        Program::new(vec![Insn::stmt(code::RET | code::K, k)]).unwrap()
    }

    #[test]
    fn the_first_rejecting_check_names_the_drop() {
        let (mut f, h) = Filter::new(
            "eth0 out".into(),
            vec![
                Check::new("one", "accept", constant(1)),
                Check::new("two", "reject", constant(0)),
                Check::new("three", "reject too", constant(0)),
            ],
        );
        let now = Instant::from_millis(0);
        assert_eq!(f.process(now, &[]), Verdict::Drop("two"));
        assert_eq!(h.name(), "eth0 out");
        assert_eq!(h.passed(), 0);
        assert_eq!(h.drops(), vec![("one", 0), ("two", 1), ("three", 0)]);
        assert_eq!(h.checks()[1].text, "reject");
    }

    #[test]
    fn a_filter_without_checks_passes_everything() {
        let (mut f, h) = Filter::new("none".into(), Vec::new());
        assert_eq!(f.process(Instant::from_millis(0), &[1]), Verdict::Pass);
        assert_eq!(h.passed(), 1);
        assert!(h.drops().is_empty());
    }
}
