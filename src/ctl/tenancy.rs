//! Tenancy: users' quotas, vnets' limits and restrictions, and the uplinks
//! root delegates to users.
//!
//! A **delegation** gives one user the right to plug into one of root's
//! switches (or to link to one host interface). Every port made under it
//! gets root's *policy*: stages on its two wires, put there before anything
//! the user may add, so they run first and cannot be removed by the user
//! (their names start with [`POLICY_PREFIX`]): what the user sends must
//! come from the port's MAC address and the delegated prefixes, what the
//! user receives must be for those prefixes, and each direction is held
//! to the delegated frame rate.
//!
//! **Uplinks between servers.** A user's own vnetd (unprivileged) reaches
//! root's through the same delegation: it connects to root's control
//! socket and asks `uplink_open` for a switch. Root's vnetd, which knows
//! the user from `SO_PEERCRED`, makes a `SOCK_SEQPACKET` pair, plugs one
//! end into the switch as a port with the policy, and sends the other end
//! back with the reply (`SCM_RIGHTS`), along with the MAC address it
//! assigned. The user's vnetd drives its end as the interface's link (one
//! frame per message, the TAP pump), and keeps the control connection open
//! for the interface's life; root unplugs the port when it closes.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use smoltcp::wire::IpCidr;

use super::l2::{canonical_prefixes, mac_text, parse_mac, parse_prefixes};
use super::proto::{self, ErrorBody, ErrorKind, Op, Outcome, Reply, Request, Restriction, VERSION};
use super::server::{Server, err, if_err};
use crate::ifnet::bpf::{Check, Filter};
use crate::ifnet::rate::RateLimit;
use crate::ifnet::{self, PortKind, Switch, Wire};
use crate::vnet::Vnet;
use crate::vnet::limits::{LINK_KINDS, Limits, Resource, Restrict, Scope};

/// Names of root's policy stages start with this; users may not add or
/// remove such stages, and topology files leave them out.
pub const POLICY_PREFIX: &str = "policy-";

/// Where a delegation lets its user reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// Ports on one of root's switches.
    Switch(String),
    /// Links (`tap`, `af_packet`) to one host interface.
    Host(String),
}

impl std::fmt::Display for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uplink::Switch(s) => write!(f, "switch {s}"),
            Uplink::Host(h) => write!(f, "host interface {h}"),
        }
    }
}

/// One delegation.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// Its number.
    pub id: u64,
    /// The user.
    pub uid: u32,
    /// Where to.
    pub target: Uplink,
    /// What the user's stacks may send from and receive for (empty: any).
    pub addrs: Vec<IpCidr>,
    /// Frames per second each way per port, and the burst.
    pub rate: Option<(u64, u64)>,
}

impl Delegation {
    /// The name of its policy stages.
    fn stage_name(&self) -> String {
        format!("{POLICY_PREFIX}d{}", self.id)
    }
}

/// The server's delegations.
#[derive(Debug, Default)]
pub struct Delegations {
    inner: Mutex<(u64, Vec<Delegation>)>,
}

impl Delegations {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Delegation>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delegation giving `uid` `target`, if any.
    pub fn find(&self, uid: u32, target: &Uplink) -> Option<Delegation> {
        self.lock()
            .1
            .iter()
            .find(|d| d.uid == uid && d.target == *target)
            .cloned()
    }

    /// Every delegation, in order.
    pub fn all(&self) -> Vec<Delegation> {
        self.lock().1.clone()
    }
}

/// A user's uid from a name (through NSS, as `getpwnam_r`) or a number.
///
/// # Errors
/// No such user, or the lookup failing.
pub fn resolve_user(t: &str) -> Result<u32, String> {
    if let Ok(n) = t.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(t) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("no user named {t:?}")),
        Err(e) => Err(format!("looking up user {t:?}: {e}")),
    }
}

/// A restriction in canonical form (prefixes as the stack prints them,
/// link kinds sorted), `None` when it says nothing: how files and dumps
/// compare.
pub fn canonical(r: &Restriction) -> Option<Restriction> {
    let mut c = r.clone();
    if let Some(a) = &mut c.addrs {
        *a = canonical_prefixes(a);
    }
    if let Some(l) = &mut c.links {
        l.sort();
        l.dedup();
    }
    (c != Restriction::default()).then_some(c)
}

/// What a vnet's own limits and restrictions are, in protocol form.
pub fn restriction_of(v: &Vnet) -> Option<Restriction> {
    let l = v.account().limits();
    let r = v.restrict();
    canonical(&Restriction {
        vnets: l.vnets,
        interfaces: l.ifaces,
        sockets: l.sockets,
        mem: l.mem,
        addrs: r.addrs.map(|a| a.iter().map(ToString::to_string).collect()),
        links: r.links,
        no_forward: r.no_forward,
    })
}

/// Limits and restrictions from their protocol form.
pub(super) fn restriction(r: &Restriction) -> Result<(Limits, Restrict), ErrorBody> {
    let limits = Limits {
        vnets: r.vnets,
        ifaces: r.interfaces,
        sockets: r.sockets,
        mem: r.mem,
    };
    let addrs = match &r.addrs {
        None => None,
        Some(l) => Some(parse_prefixes(l, "allowed address")?),
    };
    let links = match &r.links {
        None => None,
        Some(l) => {
            let l: Vec<String> = l
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(bad) = l.iter().find(|k| !LINK_KINDS.contains(&k.as_str())) {
                return Err(err(
                    ErrorKind::Invalid,
                    format!(
                        "link type {bad:?} is unknown (use {})",
                        LINK_KINDS.join(", ")
                    ),
                ));
            }
            Some(l)
        }
    };
    Ok((
        limits,
        Restrict {
            addrs,
            links,
            no_forward: r.no_forward,
        },
    ))
}

/// A vnet's limits, usage and restrictions, for listings.
pub(super) fn limits_view(v: &Vnet) -> Value {
    let a = v.account();
    let r = v.restrict();
    let mut q = serde_json::Map::new();
    for res in Resource::ALL {
        q.insert(
            res.name().into(),
            json!({
                "used": a.used(res),
                "limit": a.limits().get(res),
                "room": a.effective(res).map(|(room, scope)| json!({"n": room, "by": scope.to_string()})),
            }),
        );
    }
    json!({
        "quota": q,
        "addrs": r.addrs.map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "links": r.links,
        "no_forward": r.no_forward,
    })
}

impl Server {
    /// Carries out a tenancy request; `None` if `op` is not one.
    pub(super) fn run_tenancy(&self, op: &Op, uid: u32) -> Option<Result<Value, ErrorBody>> {
        Some(match op {
            Op::VnetRestrict {
                name,
                restrict,
                lift,
            } => self.vnet_restrict(uid, name, restrict, lift),
            Op::QuotaShow { user } => self.quota_show(uid, *user),
            Op::QuotaSet {
                user,
                limits,
                reset,
            } => self.quota_set(uid, *user, limits, *reset),
            Op::DelegateAdd {
                user,
                target,
                addrs,
                rate,
                burst,
            } => self.delegate_add(uid, *user, target, addrs, (*rate, *burst)),
            Op::DelegateDel { id } => self.delegate_del(uid, *id),
            Op::DelegateShow => Ok(Value::Array(
                self.delegations()
                    .all()
                    .into_iter()
                    .filter(|d| self.is_admin(uid) || d.uid == uid)
                    .map(|d| self.delegation_view(&d))
                    .collect(),
            )),
            Op::LinkAddUplink {
                vnet,
                name,
                switch,
                server,
            } => self.link_add_uplink(uid, vnet, name, switch, server.as_deref()),
            _ => return None,
        })
    }

    fn root_only(&self, uid: u32, what: &str) -> Result<(), ErrorBody> {
        if self.is_admin(uid) {
            Ok(())
        } else {
            Err(err(
                ErrorKind::PermissionDenied,
                format!("{what} is root's to do (uid {uid} is not root)"),
            ))
        }
    }

    fn vnet_restrict(
        &self,
        uid: u32,
        name: &str,
        r: &Restriction,
        lift: &[String],
    ) -> Result<Value, ErrorBody> {
        let v = self.owned_vnet(uid, name)?;
        let (limits, restrict) = restriction(r)?;
        let old_limits = v.account().limits();
        let old = v.restrict();
        let mut new_limits = old_limits.overlay(&limits);
        let mut new = Restrict {
            addrs: restrict.addrs.or_else(|| old.addrs.clone()),
            links: restrict.links.or_else(|| old.links.clone()),
            no_forward: restrict.no_forward || old.no_forward,
        };
        for l in lift {
            match l.as_str() {
                "addrs" => new.addrs = None,
                "links" => new.links = None,
                "forward" => new.no_forward = false,
                other => match Resource::ALL.into_iter().find(|x| x.name() == other) {
                    Some(x) => new_limits.set(x, None),
                    None => {
                        return Err(err(
                            ErrorKind::Invalid,
                            format!(
                                "{other:?} is not a limit or restriction (vnets, interfaces, sockets, mem, addrs, links, forward)"
                            ),
                        ));
                    }
                },
            }
        }
        if !self.is_admin(uid) {
            // A user narrows only: widening what root (or an ancestor's
            // owner) set would escape it.
            if let Some(res) = old_limits.widened_by(&new_limits) {
                return Err(err(
                    ErrorKind::PermissionDenied,
                    format!(
                        "vnet {name:?}: uid {uid} may only narrow limits; {res} would be raised (rule: only root widens)"
                    ),
                ));
            }
            if let Some(why) = old.widened_by(&new) {
                return Err(err(
                    ErrorKind::PermissionDenied,
                    format!(
                        "vnet {name:?}: uid {uid} may only narrow restrictions; {why} (rule: only root widens)"
                    ),
                ));
            }
        }
        // Addresses already configured under it must fit.
        if new.addrs.is_some() {
            let probe = Restrict {
                addrs: new.addrs.clone(),
                ..Restrict::default()
            };
            for x in self.subtree(&v) {
                let addrs = x.enter(crate::stack::addrs).unwrap_or_default();
                if let Some((dev, a)) = addrs
                    .iter()
                    .find(|(dev, a)| dev != "lo0" && !probe.allows_ip(&a.address()))
                {
                    return Err(err(
                        ErrorKind::Busy,
                        format!(
                            "vnet {:?} has address {a} on {dev}, outside the new restriction; remove it first",
                            x.name()
                        ),
                    ));
                }
            }
        }
        v.account().set_limits(&new_limits);
        let stop_forwarding = new.no_forward && !old.no_forward;
        v.set_restrict(new);
        if stop_forwarding {
            for x in self.subtree(&v) {
                for k in ["net.inet.ip.forwarding", "net.inet6.ip6.forwarding"] {
                    let _ = x.enter(|| crate::stack::sysctl::set(k, "0"));
                }
            }
        }
        log::info!("uid {uid} restricted vnet {name:?}");
        Ok(limits_view(&v))
    }

    /// `v` and every vnet under it.
    pub(super) fn subtree(&self, v: &Arc<Vnet>) -> Vec<Arc<Vnet>> {
        let mut out = vec![Arc::clone(v)];
        let mut i = 0;
        while i < out.len() {
            for c in self.registry().children(out[i].id()) {
                if let Some(x) = self.registry().get(c) {
                    out.push(x);
                }
            }
            i += 1;
        }
        out
    }

    fn quota_show(&self, uid: u32, user: Option<u32>) -> Result<Value, ErrorBody> {
        let admin = self.is_admin(uid);
        if let Some(u) = user
            && !admin
            && u != uid
        {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!("uid {uid} may see only its own quota, not uid {u}'s"),
            ));
        }
        let mut accounts = self.registry().users();
        let want = user.or((!admin).then_some(uid));
        if let Some(u) = want {
            accounts.retain(|a| *a.scope() == Scope::User(u));
            if accounts.is_empty() {
                accounts.push(self.registry().user_account(u));
            }
        }
        Ok(Value::Array(
            accounts
                .iter()
                .map(|a| {
                    let l = a.limits();
                    let mut m = serde_json::Map::new();
                    if let Scope::User(u) = a.scope() {
                        m.insert("uid".into(), json!(u));
                    }
                    for r in Resource::ALL {
                        m.insert(
                            r.name().into(),
                            json!({ "used": a.used(r), "limit": l.get(r) }),
                        );
                    }
                    Value::Object(m)
                })
                .collect(),
        ))
    }

    fn quota_set(
        &self,
        uid: u32,
        user: Option<u32>,
        r: &Restriction,
        reset: bool,
    ) -> Result<Value, ErrorBody> {
        self.root_only(uid, "setting quotas")?;
        if r.addrs.is_some() || r.links.is_some() || r.no_forward {
            return Err(err(
                ErrorKind::Invalid,
                "a user's quota counts vnets, interfaces, sockets and mem; addresses, links and forwarding are restrictions of a vnet (vnet restrict)",
            ));
        }
        let (limits, _) = restriction(r)?;
        match user {
            None => {
                self.registry().set_default_user_limits(limits);
                log::info!("uid {uid} set the default user quota: {limits:?}");
            }
            Some(u) => {
                let l = self
                    .registry()
                    .set_user_limits(u, (!reset).then_some(limits));
                log::info!("uid {uid} set uid {u}'s quota: {l:?}");
            }
        }
        match user {
            None => Ok(Value::Null),
            Some(_) => self.quota_show(uid, user),
        }
    }

    fn delegate_add(
        &self,
        uid: u32,
        user: u32,
        target: &str,
        addrs: &[String],
        (rate, burst): (Option<u64>, Option<u64>),
    ) -> Result<Value, ErrorBody> {
        self.root_only(uid, "delegating an uplink")?;
        let target = if self.switches().get(target).is_some() {
            Uplink::Switch(target.to_string())
        } else if std::path::Path::new("/sys/class/net").join(target).exists()
            && !target.contains('/')
        {
            Uplink::Host(target.to_string())
        } else {
            return Err(err(
                ErrorKind::NotFound,
                format!(
                    "{target:?} is neither a switch nor a host interface (make the switch, or the TAP: ip tuntap add {target} mode tap)"
                ),
            ));
        };
        let addrs = parse_prefixes(addrs, "delegated address")?;
        if addrs.is_empty() && matches!(target, Uplink::Switch(_)) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "{target}: a port on a shared switch needs the addresses it may use (--addr PREFIX)"
                ),
            ));
        }
        if rate == Some(0) {
            return Err(err(
                ErrorKind::Invalid,
                "a rate of 0 frames/s passes nothing",
            ));
        }
        let rate = rate.map(|r| (r, burst.unwrap_or_else(|| RateLimit::default_burst(r))));
        let d = {
            let mut g = self
                .delegations()
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(old) = g.1.iter().find(|d| d.uid == user && d.target == target) {
                return Err(err(
                    ErrorKind::Exists,
                    format!(
                        "uid {user} already has {target} (delegation {}); delegate del {} first",
                        old.id, old.id
                    ),
                ));
            }
            g.0 += 1;
            let d = Delegation {
                id: g.0,
                uid: user,
                target,
                addrs,
                rate,
            };
            g.1.push(d.clone());
            d
        };
        log::info!(
            "uid {uid} delegated {} to uid {user} (delegation {})",
            d.target,
            d.id
        );
        Ok(self.delegation_view(&d))
    }

    fn delegate_del(&self, uid: u32, id: u64) -> Result<Value, ErrorBody> {
        self.root_only(uid, "taking a delegation back")?;
        let d = {
            let mut g = self
                .delegations()
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let pos = g.1.iter().position(|d| d.id == id).ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("delegation {id}: no such delegation"),
                )
            })?;
            g.1.remove(pos)
        };
        // Unplug what was made under it: ports carrying its policy.
        let name = d.stage_name();
        let has = |w: &Wire| w.reports().iter().any(|(_, r)| r.name == name);
        let mut unplugged = 0;
        for (_, e) in self.switches().all() {
            for p in e.sw.ports() {
                if has(p.from_client()) || has(p.to_client()) {
                    e.sw.remove_port(p.id());
                    unplugged += 1;
                }
            }
        }
        for v in self.registry().list() {
            let devs: Vec<String> = v
                .enter(ifnet::list)
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.name)
                .collect();
            for dev in devs {
                let mine = v
                    .enter(|| ifnet::with_ifnet(&dev, |i| i.tx_wire().is_some_and(|w| has(w))))
                    .unwrap_or(false);
                if mine && v.enter(|| ifnet::destroy(&dev)).is_ok() {
                    unplugged += 1;
                }
            }
        }
        self.kick_all();
        log::info!("uid {uid} took delegation {id} back: {unplugged} link(s) removed");
        Ok(json!({ "removed": unplugged }))
    }

    fn delegation_view(&self, d: &Delegation) -> Value {
        let name = d.stage_name();
        let mut ports = Vec::new();
        if let Uplink::Switch(s) = &d.target
            && let Some(e) = self.switches().get(s)
        {
            for p in e.sw.ports() {
                let drops: Vec<Value> = [("out", p.from_client()), ("in", p.to_client())]
                    .iter()
                    .flat_map(|(dir, w)| {
                        w.reports()
                            .into_iter()
                            .filter(|(_, r)| r.name.starts_with(&name))
                            .map(move |(_, r)| {
                                json!({
                                    "dir": dir, "stage": r.name, "passed": r.passed,
                                    "drops": r.drops.iter().map(|(why, n)| json!({"reason": why, "n": n})).collect::<Vec<_>>(),
                                })
                            })
                    })
                    .collect();
                if !drops.is_empty() {
                    ports.push(json!({ "port": p.id(), "policy": drops }));
                }
            }
        }
        json!({
            "id": d.id,
            "uid": d.uid,
            "target": d.target.to_string(),
            "addrs": d.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "rate": d.rate.map(|(r, _)| r),
            "burst": d.rate.map(|(_, b)| b),
            "ports": ports,
        })
    }

    /// The switch `uid` may plug into: its own (or any, for root), or one
    /// delegated to it, with the delegation.
    pub(super) fn may_plug(
        &self,
        uid: u32,
        switch: &str,
    ) -> Result<(Arc<Switch>, Option<Delegation>), ErrorBody> {
        let e = self.switches().get(switch).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("switch {switch:?}: no such switch"),
            )
        })?;
        if self.is_admin(uid) || e.owner == uid {
            return Ok((e.sw, None));
        }
        match self
            .delegations()
            .find(uid, &Uplink::Switch(switch.to_string()))
        {
            Some(d) => Ok((e.sw, Some(d))),
            None => Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "switch {switch:?} belongs to uid {}; uid {uid} may plug only into its own switches or one delegated to it (vnetctl delegate)",
                    e.owner
                ),
            )),
        }
    }

    /// Whether `uid` may link vnet `v` to host interface `host`: root may;
    /// others with a delegation of it.
    pub(super) fn may_host_link(
        &self,
        uid: u32,
        vnet: &str,
        host: &str,
    ) -> Result<(Arc<Vnet>, Option<Delegation>), ErrorBody> {
        let v = self.owned_vnet(uid, vnet)?;
        if self.is_admin(uid) {
            return Ok((v, None));
        }
        match self
            .delegations()
            .find(uid, &Uplink::Host(host.to_string()))
        {
            Some(d) => Ok((v, Some(d))),
            None => Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "vnet {vnet:?}: links to the host are root's to make; uid {uid} has no delegation of host interface {host:?} (vnetctl delegate)"
                ),
            )),
        }
    }

    /// Puts delegation `d`'s policy on a port's or interface's wires:
    /// `tx` carries what the user sends (from `mac`), `rx` what it
    /// receives.
    pub(super) fn put_policy(
        d: &Delegation,
        tx: &Wire,
        rx: &Wire,
        mac: [u8; 6],
    ) -> Result<(), ErrorBody> {
        let name = d.stage_name();
        let bad = |e: crate::ifnet::bpf::BpfError| err(ErrorKind::Invalid, e.to_string());
        let mut out = Vec::new();
        let mut inb = Vec::new();
        if !d.addrs.is_empty() {
            out.push(Check::allow_mac(&[smoltcp::wire::EthernetAddress(mac)]).map_err(bad)?);
            out.push(Check::allow_src(&d.addrs).map_err(bad)?);
            inb.push(Check::allow_dst(&d.addrs).map_err(bad)?);
        }
        for (w, checks) in [(tx, out), (rx, inb)] {
            if !checks.is_empty() {
                w.push_stage(Box::new(Filter::new(name.clone(), checks).0));
            }
            if let Some((rate, burst)) = d.rate {
                w.push_stage(Box::new(RateLimit::new(
                    format!("{name}-rate"),
                    rate,
                    burst,
                )));
            }
        }
        Ok(())
    }

    /// Serves `uplink_open` on `conn` (see the module docs): replies with
    /// the port's end attached, then holds the port until the client
    /// closes the connection.
    pub(super) fn uplink_open(
        &self,
        op: Op,
        uid: u32,
        conn: &UnixStream,
        id: u64,
    ) -> Result<(), ErrorBody> {
        let Op::UplinkOpen { switch } = op else {
            return Err(err(ErrorKind::BadRequest, "not an uplink_open request"));
        };
        let (sw, deleg) = self.may_plug(uid, &switch)?;
        let pid = super::peercred::peer_pid(conn).unwrap_or(0);
        let (ours, theirs) = crate::sockets::wire::pair(libc::SOCK_SEQPACKET)
            .map_err(|e| err(ErrorKind::Busy, format!("socket pair: {e}")))?;
        let port = ifnet::socket_port(&sw, ours, PortKind::Remote { uid, pid }, self.host_io())
            .map_err(|e| if_err(&format!("switch {switch}"), e))?;
        let mac = assigned_mac(uid, pid, port.id());
        if let Some(d) = &deleg
            && let Err(e) = Self::put_policy(d, port.from_client(), port.to_client(), mac)
        {
            sw.remove_port(port.id());
            return Err(e);
        }
        let reply = Reply {
            v: VERSION,
            id,
            outcome: Outcome::Ok(json!({
                "switch": switch,
                "port": port.id(),
                "mac": mac_text(mac),
                "addrs": deleg.as_ref().map(|d| d.addrs.iter().map(ToString::to_string).collect::<Vec<_>>()),
                "delegation": deleg.as_ref().map(|d| d.id),
            })),
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let sent =
            crate::sockets::wire::send_with_fds(conn.as_raw_fd(), &frame, &[theirs.as_raw_fd()], 0)
                .and_then(|n| (&*conn).write_all(&frame[n..]));
        drop(theirs);
        if sent.is_ok() {
            log::info!(
                "switch {switch:?}: port {} is an uplink for uid {uid} (pid {pid}, mac {})",
                port.id(),
                mac_text(mac)
            );
            // The port lives as long as the connection: nothing more is
            // read from it but its end.
            let mut rd = conn;
            let mut b = [0u8; 64];
            while let Ok(n) = rd.read(&mut b) {
                if n == 0 {
                    break;
                }
            }
        }
        sw.remove_port(port.id());
        self.kick_all();
        log::info!("switch {switch:?}: uplink port {} closed", port.id());
        Ok(())
    }

    fn link_add_uplink(
        &self,
        uid: u32,
        vnet: &str,
        name: &str,
        switch: &str,
        server: Option<&str>,
    ) -> Result<Value, ErrorBody> {
        let v = self.owned_vnet(uid, vnet)?;
        // This server connects with its own credentials: only those it
        // serves as itself may make it do so.
        if !self.is_admin(uid) {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "vnet {vnet:?}: an uplink connects to another vnetd as this one's user; uid {uid} may not (run your own vnetd, or plug into a delegated switch: link add NAME type port switch SW)"
                ),
            ));
        }
        self.registry()
            .check_link(&v, "uplink")
            .map_err(|m| err(ErrorKind::PermissionDenied, format!("vnet {vnet:?}: {m}")))?;
        let path = server.unwrap_or(DEFAULT_ROOT_SOCKET);
        let (conn, fd, ok) = open_remote(path, switch)
            .map_err(|e| err(ErrorKind::Invalid, format!("uplink to {path}: {e}")))?;
        let mac = ok
            .get("mac")
            .and_then(Value::as_str)
            .and_then(parse_mac)
            .ok_or_else(|| {
                err(
                    ErrorKind::Invalid,
                    format!("uplink to {path}: no MAC address in the reply"),
                )
            })?;
        ifnet::uplink(
            &v,
            name,
            fd,
            mac,
            (switch, path, ifnet::Keep(Arc::new(conn))),
            self.host_io(),
        )
        .map_err(|e| if_err(vnet, e))?;
        log::info!(
            "vnet {vnet:?}: interface {name:?} is an uplink to switch {switch:?} of {path} (port {}, mac {})",
            ok.get("port").unwrap_or(&Value::Null),
            mac_text(mac)
        );
        Ok(ok)
    }
}

/// Root's vnetd's control socket.
pub const DEFAULT_ROOT_SOCKET: &str = "/run/vnetd.sock";

/// A locally administered unicast address for an uplink port (hashed
/// with random keys: different for each one made).
fn assigned_mac(uid: u32, pid: u32, port: u32) -> [u8; 6] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(uid);
    h.write_u32(pid);
    h.write_u32(port);
    let x = h.finish().to_be_bytes();
    [(x[0] & 0xfe) | 0x02, x[1], x[2], x[3], x[4], x[5]]
}

/// Asks the vnetd at `path` for an uplink port on `switch`: returns the
/// connection (to hold), this end of the port, and the reply.
fn open_remote(path: &str, switch: &str) -> std::io::Result<(UnixStream, OwnedFd, Value)> {
    let conn = UnixStream::connect(path)?;
    let req = Request {
        v: VERSION,
        id: 1,
        op: Op::UplinkOpen {
            switch: switch.to_string(),
        },
    };
    proto::write_frame(
        &mut &conn,
        &serde_json::to_vec(&req).map_err(std::io::Error::other)?,
    )?;
    // The descriptor comes with the reply's first bytes.
    let mut len = [0u8; 4];
    let (n, fd) =
        crate::sockets::wire::recv_with_fd(conn.as_raw_fd(), &mut len, libc::MSG_WAITALL)?;
    if n != 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the other vnetd closed the connection",
        ));
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > proto::MAX_FRAME {
        return Err(std::io::Error::other("oversized reply"));
    }
    let mut body = vec![0u8; size];
    (&conn).read_exact(&mut body)?;
    let reply: Reply = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    match reply.outcome {
        Outcome::Ok(v) => match fd {
            Some(fd) => Ok((conn, fd, v)),
            None => Err(std::io::Error::other("the reply carried no port")),
        },
        Outcome::Error(e) => Err(std::io::Error::other(format!("refused: {}", e.message))),
    }
}
