//! Quotas and restrictions: what a vnet (with everything under it) and a
//! user may use, after VIMAGE's planned hierarchy of vimages with
//! permissions, restrictions and inheritance.
//!
//! **Quotas** are hierarchical, as cgroups charge memory: every vnet has an
//! [`Account`] whose parent is its parent vnet's account, and a vnet
//! directly under `vnet0` has its owner's *user account* as parent. Taking
//! one unit of a [`Resource`] in a vnet ([`Account::charge`]) counts it in
//! that vnet and in every account above it, and is refused when any of them
//! would pass its limit; the refusal ([`QuotaError`]) names that account
//! and limit. A [`Charge`] gives its units back when dropped, so whatever
//! holds the resource (an interface, a socket record, a socket's buffers, a
//! vnet) holds its charge, and every way it goes away releases it.
//!
//! A limit on a vnet therefore bounds the vnet and all its descendants
//! together: a child can only narrow what its parent has.
//!
//! **Restrictions** ([`Restrict`]) say which addresses a vnet may
//! configure, which kinds of links it may make and whether it may forward.
//! A vnet is held to its own and to every ancestor's (the registry checks
//! the chain), so here too a child only narrows.
//!
//! Nothing here reads a clock or touches a descriptor: this is accounting,
//! done with atomics on the paths that allocate.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::wire::{IpAddress, IpCidr};

use super::VnetId;

/// What quotas count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Vnets (a vnet's account counts its descendants).
    Vnets,
    /// Interfaces.
    Ifaces,
    /// Sockets served to programs.
    Sockets,
    /// Bytes of socket buffers.
    Mem,
}

impl Resource {
    /// Every resource, in listing order.
    pub const ALL: [Resource; 4] = [
        Resource::Vnets,
        Resource::Ifaces,
        Resource::Sockets,
        Resource::Mem,
    ];

    /// The name used in commands, listings and errors.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Vnets => "vnets",
            Resource::Ifaces => "interfaces",
            Resource::Sockets => "sockets",
            Resource::Mem => "mem",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit per resource; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Vnets.
    pub vnets: Option<u64>,
    /// Interfaces.
    pub ifaces: Option<u64>,
    /// Sockets served to programs.
    pub sockets: Option<u64>,
    /// Bytes of socket buffers.
    pub mem: Option<u64>,
}

impl Limits {
    /// No limit on anything.
    pub const NONE: Limits = Limits {
        vnets: None,
        ifaces: None,
        sockets: None,
        mem: None,
    };

    /// The limit on `r`.
    pub fn get(&self, r: Resource) -> Option<u64> {
        match r {
            Resource::Vnets => self.vnets,
            Resource::Ifaces => self.ifaces,
            Resource::Sockets => self.sockets,
            Resource::Mem => self.mem,
        }
    }

    /// Sets the limit on `r`.
    pub fn set(&mut self, r: Resource, v: Option<u64>) {
        *match r {
            Resource::Vnets => &mut self.vnets,
            Resource::Ifaces => &mut self.ifaces,
            Resource::Sockets => &mut self.sockets,
            Resource::Mem => &mut self.mem,
        } = v;
    }

    /// These limits with `other`'s set ones laid over them.
    pub fn overlay(mut self, other: &Limits) -> Limits {
        for r in Resource::ALL {
            if let Some(v) = other.get(r) {
                self.set(r, Some(v));
            }
        }
        self
    }

    /// The first resource on which `new` allows more than these.
    pub fn widened_by(&self, new: &Limits) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| match (self.get(*r), new.get(*r)) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => b > a,
                (None, _) => false,
            })
    }
}

impl std::str::FromStr for Limits {
    type Err = String;

    /// `vnets=64,interfaces=256,sockets=4096,mem=1G` (any of them; `none`
    /// for no limit).
    fn from_str(t: &str) -> Result<Limits, String> {
        let mut l = Limits::NONE;
        for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: use NAME=VALUE"))?;
            let r = Resource::ALL
                .into_iter()
                .find(|r| r.name() == k.trim())
                .ok_or_else(|| format!("{k:?}: use vnets, interfaces, sockets or mem"))?;
            let v = v.trim();
            l.set(
                r,
                if v == "none" {
                    None
                } else {
                    Some(parse_size(v)?)
                },
            );
        }
        Ok(l)
    }
}

/// A count or a size: `4096`, `64k`, `256M`, `1G` (powers of 1024).
///
/// # Errors
/// Anything else, with what to write instead.
pub fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let bad = || format!("{t:?}: use a number, or one with k, M or G");
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (
            &t[..i],
            match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(bad()),
            },
        ),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(bad)
}

/// Whose account it is, for errors and listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A user's (every vnet they own directly under `vnet0` charges it).
    User(u32),
    /// A vnet's (with everything under it).
    Vnet(VnetId, Arc<str>),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::User(uid) => write!(f, "uid {uid}"),
            Scope::Vnet(_, name) => write!(f, "vnet {name:?}"),
        }
    }
}

/// A refused charge: which account's limit, and how far it is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota {resource} of {scope} reached: {used} in use, {want} more asked, limit {limit}{hint}",
    hint = if matches!(scope, Scope::User(_)) { " (set by root: vnetctl quota)" } else { " (vnetctl vnet restrict)" }
)]
pub struct QuotaError {
    /// The account whose limit refused.
    pub scope: Scope,
    /// Of what.
    pub resource: Resource,
    /// Its limit.
    pub limit: u64,
    /// In use when asked.
    pub used: u64,
    /// How much was asked.
    pub want: u64,
}

/// Usage and limits of a user or a vnet (see the module docs).
pub struct Account {
    scope: Scope,
    /// `u64::MAX` is no limit.
    limits: [AtomicU64; 4],
    used: [AtomicU64; 4],
    parent: Option<Arc<Account>>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("scope", &self.scope)
            .field("limits", &self.limits())
            .finish()
    }
}

impl Account {
    /// A new account under `parent`, with `limits`.
    pub fn new(scope: Scope, parent: Option<Arc<Account>>, limits: Limits) -> Arc<Account> {
        let a = Account {
            scope,
            limits: Default::default(),
            used: Default::default(),
            parent,
        };
        a.set_limits(&limits);
        Arc::new(a)
    }

    /// Whose it is.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The account above, if any.
    pub fn parent(&self) -> Option<&Arc<Account>> {
        self.parent.as_ref()
    }

    /// Its own limits (not those above it).
    pub fn limits(&self) -> Limits {
        let mut l = Limits::NONE;
        for r in Resource::ALL {
            let v = self.limits[r.index()].load(Ordering::Relaxed);
            l.set(r, (v != u64::MAX).then_some(v));
        }
        l
    }

    /// Replaces its limits. Usage above a lowered limit stays; only new
    /// charges are refused.
    pub fn set_limits(&self, l: &Limits) {
        for r in Resource::ALL {
            self.limits[r.index()].store(l.get(r).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// How much of `r` it and everything under it use.
    pub fn used(&self, r: Resource) -> u64 {
        self.used[r.index()].load(Ordering::Relaxed)
    }

    /// The tightest limit on `r` here or above, with its scope: what a
    /// listing shows as "effective".
    pub fn effective(&self, r: Resource) -> Option<(u64, &Scope)> {
        let mut best: Option<(u64, &Scope)> = None;
        let mut a = Some(self);
        while let Some(x) = a {
            let lim = x.limits[r.index()].load(Ordering::Relaxed);
            let room = lim.saturating_sub(x.used(r));
            if lim != u64::MAX && best.is_none_or(|(b, _)| room < b) {
                best = Some((room, &x.scope));
            }
            a = x.parent.as_deref();
        }
        best
    }

    /// Takes `n` of `r` here and in every account above; refused, with
    /// nothing taken, when one of them would pass its limit.
    ///
    /// # Errors
    /// The first account (from this one up) whose limit refuses.
    pub fn charge(self: &Arc<Self>, r: Resource, n: u64) -> Result<Charge, QuotaError> {
        let mut done: Vec<&Account> = Vec::new();
        let mut a = Some(&**self);
        while let Some(x) = a {
            let used = &x.used[r.index()];
            let lim = x.limits[r.index()].load(Ordering::Relaxed);
            let got = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= lim)
            });
            if let Err(u) = got {
                for d in done {
                    d.used[r.index()].fetch_sub(n, Ordering::AcqRel);
                }
                return Err(QuotaError {
                    scope: x.scope.clone(),
                    resource: r,
                    limit: lim,
                    used: u,
                    want: n,
                });
            }
            done.push(x);
            a = x.parent.as_deref();
        }
        Ok(Charge {
            acct: Some(Arc::clone(self)),
            r,
            n,
        })
    }

    /// Takes `n` of `r` whatever the limits say: for what must come back
    /// (an interface returning to its home vnet).
    pub fn force(self: &Arc<Self>, r: Resource, n: u64) -> Charge {
        let mut a = Some(&**self);
        while let Some(x) = a {
            x.used[r.index()].fetch_add(n, Ordering::AcqRel);
            a = x.parent.as_deref();
        }
        Charge {
            acct: Some(Arc::clone(self)),
            r,
            n,
        }
    }
}

/// Units taken from an account and its ancestors, given back on drop.
#[derive(Debug)]
pub struct Charge {
    acct: Option<Arc<Account>>,
    r: Resource,
    n: u64,
}

impl Charge {
    /// A charge of nothing.
    pub fn none(r: Resource) -> Charge {
        Charge {
            acct: None,
            r,
            n: 0,
        }
    }

    /// How many units it holds.
    pub fn amount(&self) -> u64 {
        self.n
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut a = self.acct.as_deref();
        while let Some(x) = a {
            x.used[self.r.index()].fetch_sub(self.n, Ordering::AcqRel);
            a = x.parent.as_deref();
        }
    }
}

/// Kinds of links, for [`Restrict::links`].
pub const LINK_KINDS: [&str; 5] = ["epair", "port", "uplink", "tap", "af_packet"];

/// What one vnet is restricted to (beyond its quotas); a vnet is held to
/// its own and every ancestor's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restrict {
    /// Prefixes its addresses must lie in; `None` is any.
    pub addrs: Option<Vec<IpCidr>>,
    /// Kinds of links it may make (from [`LINK_KINDS`]); `None` is any.
    pub links: Option<Vec<String>>,
    /// Forbids turning IP forwarding on.
    pub no_forward: bool,
}

impl Restrict {
    /// Whether it allows an address of its own (whatever the length of
    /// the prefix it is configured with: a vnet given 10.2.0.0/28 of a /24
    /// numbers itself 10.2.0.2/24).
    pub fn allows_ip(&self, a: &IpAddress) -> bool {
        self.addrs
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p.contains_addr(a)))
    }

    /// Whether it allows links of `kind`.
    pub fn allows_link(&self, kind: &str) -> bool {
        self.links
            .as_ref()
            .is_none_or(|l| l.iter().any(|k| k == kind))
    }

    /// The first way `new` allows more than this: what a user may not do
    /// to a vnet root restricted.
    pub fn widened_by(&self, new: &Restrict) -> Option<String> {
        if let Some(mine) = &self.addrs {
            match &new.addrs {
                None => return Some("addresses: any, where they were limited".into()),
                Some(l) => {
                    if let Some(p) = l
                        .iter()
                        .find(|p| !mine.iter().any(|m| m.contains_subnet(p)))
                    {
                        return Some(format!("address prefix {p} is outside those allowed"));
                    }
                }
            }
        }
        if let Some(mine) = &self.links {
            match &new.links {
                None => return Some("links: any, where they were limited".into()),
                Some(l) => {
                    if let Some(k) = l.iter().find(|k| !mine.contains(k)) {
                        return Some(format!("links of type {k} are not allowed"));
                    }
                }
            }
        }
        if self.no_forward && !new.no_forward {
            return Some("forwarding is not allowed".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(sockets: u64) -> Limits {
        Limits {
            sockets: Some(sockets),
            ..Limits::NONE
        }
    }

    #[test]
    fn charges_climb_and_come_back() {
        let user = Account::new(Scope::User(1000), None, lim(5));
        let a = Account::new(
            Scope::Vnet(VnetId(1), "a".into()),
            Some(Arc::clone(&user)),
            lim(3),
        );
        let b = Account::new(
            Scope::Vnet(VnetId(2), "b".into()),
            Some(Arc::clone(&user)),
            Limits::NONE,
        );
        let c1 = a.charge(Resource::Sockets, 3).unwrap();
        let e = a.charge(Resource::Sockets, 1).unwrap_err();
        assert_eq!(e.scope, Scope::Vnet(VnetId(1), "a".into()));
        assert_eq!((e.used, e.limit), (3, 3));
        assert!(e.to_string().contains("quota sockets of vnet \"a\""), "{e}");
        let c2 = b.charge(Resource::Sockets, 2).unwrap();
        let e = b.charge(Resource::Sockets, 1).unwrap_err();
        assert_eq!(e.scope, Scope::User(1000));
        // Nothing was taken from b by the refused charge.
        assert_eq!(b.used(Resource::Sockets), 2);
        assert_eq!(user.used(Resource::Sockets), 5);
        drop(c1);
        assert_eq!(user.used(Resource::Sockets), 2);
        assert_eq!(a.used(Resource::Sockets), 0);
        drop(c2);
        assert_eq!(user.used(Resource::Sockets), 0);
        // Forced charges pass limits and come back the same way.
        let f = a.force(Resource::Sockets, 9);
        assert_eq!(user.used(Resource::Sockets), 9);
        drop(f);
        assert_eq!(user.used(Resource::Sockets), 0);
    }

    #[test]
    fn limits_parse() {
        let l: Limits = "vnets=4, mem=64M,sockets=none".parse().unwrap();
        assert_eq!(
            l,
            Limits {
                vnets: Some(4),
                mem: Some(64 << 20),
                ..Limits::NONE
            }
        );
        assert!("files=3".parse::<Limits>().is_err());
        assert!("mem=3X".parse::<Limits>().is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn restrictions_only_narrow() {
        let p: IpCidr = "10.2.0.0/28".parse().unwrap();
        let r = Restrict {
            addrs: Some(vec![p]),
            links: Some(vec!["port".into()]),
            no_forward: true,
        };
        assert!(r.allows_ip(&"10.2.0.3".parse().unwrap()));
        assert!(!r.allows_ip(&"10.2.0.16".parse().unwrap()));
        assert!(!r.allows_ip(&"10.3.0.3".parse().unwrap()));
        assert!(r.allows_link("port") && !r.allows_link("epair"));
        let narrower = Restrict {
            addrs: Some(vec!["10.2.0.0/30".parse().unwrap()]),
            ..r.clone()
        };
        assert_eq!(r.widened_by(&narrower), None);
        assert!(r.widened_by(&Restrict::default()).is_some());
        let wider = Restrict {
            addrs: Some(vec!["10.2.0.0/24".parse().unwrap()]),
            ..r.clone()
        };
        assert!(r.widened_by(&wider).unwrap().contains("10.2.0.0/24"));
        assert!(
            lim(3).widened_by(&lim(4)) == Some(Resource::Sockets)
                && lim(3).widened_by(&lim(2)).is_none()
        );
    }
}
