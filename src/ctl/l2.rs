//! The layer-2 part of the control server: switches and their ports,
//! filters on interfaces and ports, and capture.
//!
//! Switches belong to vnetd, not to a vnet: any vnet may have a port on
//! one. A switch has an owner (the user who created it); the owner and the
//! administrators may change it, plug host devices into it (administrators
//! only: that reaches the host's traffic), filter and capture its ports.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use smoltcp::time::Duration;

use super::proto::{ErrorBody, ErrorKind, Op, Target};
use super::server::{Server, err, if_err};
use crate::ifnet::bpf::{self, Check, Filter};
use crate::ifnet::capture::{self, Record};
use crate::ifnet::{self, Switch, SwitchMode, Wire};
use crate::vnet::Vnet;

/// A switch and who made it.
#[derive(Debug, Clone)]
pub struct SwitchEntry {
    /// The switch.
    pub sw: Arc<Switch>,
    /// Its owner.
    pub owner: u32,
}

/// vnetd's switches, by name.
#[derive(Debug, Default)]
pub struct Switches {
    map: Mutex<BTreeMap<String, SwitchEntry>>,
}

impl Switches {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SwitchEntry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The switch of this name.
    pub fn get(&self, name: &str) -> Option<SwitchEntry> {
        self.lock().get(name).cloned()
    }

    /// All switches, by name.
    pub fn all(&self) -> Vec<(String, SwitchEntry)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Destroys every switch (at shutdown).
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        for e in all.values() {
            e.sw.destroy();
        }
    }
}

fn valid_switch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Where a capture or filter acts, resolved.
enum Place {
    /// An interface: the wires it sends and receives on.
    Ifnet {
        vnet: Arc<Vnet>,
        dev: String,
        tx: Arc<Wire>,
        rx: Arc<Wire>,
    },
    /// A port: the wires its client sends and receives on.
    Port {
        sw: Arc<Switch>,
        port: u32,
        tx: Arc<Wire>,
        rx: Arc<Wire>,
    },
    /// A whole switch.
    Switch(Arc<Switch>),
}

impl Server {
    /// A frame matcher from a tcpdump expression.
    fn compile_matcher(&self, expr: &str) -> Result<capture::Matcher, ErrorBody> {
        let p = bpf::compile(expr).map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        Ok(Arc::new(move |f: &[u8]| p.run(f) != 0))
    }

    /// The wire of `place` in direction `dir`: `out` is what the interface
    /// (or the port's client) sends, `in` what it receives.
    fn filter_wire(place: &Place, dir: &str) -> Result<Arc<Wire>, ErrorBody> {
        let (tx, rx) = match place {
            Place::Ifnet { tx, rx, .. } | Place::Port { tx, rx, .. } => (tx, rx),
            Place::Switch(sw) => {
                return Err(err(
                    ErrorKind::Invalid,
                    format!(
                        "switch {:?}: filters go on a port (SWITCH:PORT), not on the whole switch",
                        sw.name()
                    ),
                ));
            }
        };
        match dir {
            "out" => Ok(Arc::clone(tx)),
            "in" => Ok(Arc::clone(rx)),
            _ => Err(err(
                ErrorKind::Invalid,
                format!("direction {dir:?}: use in (received) or out (sent)"),
            )),
        }
    }

    /// Serves a `filter_add` request.
    fn filter_add(&self, uid: u32, op: &Op) -> Result<Value, ErrorBody> {
        let Op::FilterAdd {
            at,
            dir,
            name,
            expr,
            bpf: prog,
            allow_src,
            allow_dst,
            allow_mac,
        } = op
        else {
            return Err(err(ErrorKind::BadRequest, "not a filter_add request"));
        };
        let (dir, name, expr, prog) = (
            dir.as_str(),
            name.as_deref(),
            expr.as_deref(),
            prog.as_deref(),
        );
        let place = self.place(uid, at)?;
        let wire = Self::filter_wire(&place, dir)?;
        let bad = |e: String| err(ErrorKind::Invalid, e);
        let mut checks = Vec::new();
        let macs: Vec<smoltcp::wire::EthernetAddress> = allow_mac
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| {
                parse_mac(s.trim())
                    .map(smoltcp::wire::EthernetAddress)
                    .ok_or_else(|| {
                        bad(format!(
                            "allow-mac {s:?} is not a MAC address (02:00:5e:00:00:01)"
                        ))
                    })
            })
            .collect::<Result<_, ErrorBody>>()?;
        let to_err = |e: bpf::BpfError| bad(e.to_string());
        if !macs.is_empty() {
            checks.push(Check::allow_mac(&macs).map_err(to_err)?);
        }
        let src = parse_prefixes(allow_src, "allow-src")?;
        if !src.is_empty() {
            checks.push(Check::allow_src(&src).map_err(to_err)?);
        }
        let dst = parse_prefixes(allow_dst, "allow-dst")?;
        if !dst.is_empty() {
            checks.push(Check::allow_dst(&dst).map_err(to_err)?);
        }
        if let Some(p) = prog {
            checks.push(Check::from_text(p).map_err(to_err)?);
        }
        if let Some(e) = expr {
            checks.push(Check::expression(e).map_err(to_err)?);
        }
        if checks.is_empty() {
            return Err(bad(
                "a filter needs something to check: an expression, a program, or --allow-src/--allow-dst/--allow-mac".into(),
            ));
        }
        let existing = wire.reports();
        if let Some(n) = name
            && n.starts_with(super::tenancy::POLICY_PREFIX)
        {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "filter names starting with {:?} are root's policy (delegations); choose another",
                    super::tenancy::POLICY_PREFIX
                ),
            ));
        }
        let name = match name {
            Some(n) => {
                if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(format!(
                        "filter name {n:?} is invalid (1 to 32 printable characters)"
                    )));
                }
                if existing.iter().any(|(_, r)| r.name == n) {
                    return Err(err(
                        ErrorKind::Exists,
                        format!(
                            "{}: a filter {n:?} exists in direction {dir}",
                            describe(&place)
                        ),
                    ));
                }
                n.to_string()
            }
            None => (1..)
                .map(|i| format!("f{i}"))
                .find(|n| !existing.iter().any(|(_, r)| &r.name == n))
                .unwrap_or_default(),
        };
        let (filter, _) = Filter::new(name.clone(), checks);
        wire.push_stage(Box::new(filter));
        log::info!(
            "{}: filter {name:?} added ({dir}) by uid {uid}",
            describe(&place)
        );
        Ok(json!({ "name": name }))
    }

    fn filter_del(&self, uid: u32, at: &Target, dir: &str, name: &str) -> Result<Value, ErrorBody> {
        let place = self.place(uid, at)?;
        if name.starts_with(super::tenancy::POLICY_PREFIX) {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: filter {name:?} is root's policy for a delegated uplink; it goes with the link or the delegation (delegate del), not by filter del (rule: delegation policy)",
                    describe(&place)
                ),
            ));
        }
        let wire = Self::filter_wire(&place, dir)?;
        let id = wire
            .reports()
            .into_iter()
            .find(|(_, r)| r.name == name)
            .map(|(id, _)| id)
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!(
                        "{}: no filter {name:?} in direction {dir}",
                        describe(&place)
                    ),
                )
            })?;
        wire.remove_stage(id);
        Ok(Value::Null)
    }

    fn filter_show(&self, uid: u32, at: &Target) -> Result<Value, ErrorBody> {
        // Every interface of a vnet, or every port of a switch, or one.
        let places: Vec<Place> = match (&at.vnet, &at.dev, &at.switch, at.port) {
            (vnet, None, None, None) => {
                let vname = vnet.as_deref().unwrap_or("vnet0");
                let v = self.owned_vnet(uid, vname)?;
                let names = v.enter(ifnet::list).map_err(|e| if_err(vname, e))?;
                names
                    .into_iter()
                    .filter(|l| l.kind != "loopback")
                    .filter_map(|l| {
                        let t = Target {
                            vnet: Some(vname.to_string()),
                            dev: Some(l.name),
                            ..Target::default()
                        };
                        self.place(uid, &t).ok()
                    })
                    .collect()
            }
            (None, None, Some(sw), None) => {
                let s = self.switch_owned(uid, sw)?;
                s.ports()
                    .iter()
                    .filter_map(|p| {
                        let t = Target {
                            switch: Some(sw.clone()),
                            port: Some(p.id()),
                            ..Target::default()
                        };
                        self.place(uid, &t).ok()
                    })
                    .collect()
            }
            _ => vec![self.place(uid, at)?],
        };
        let mut rows = Vec::new();
        for place in &places {
            for dir in ["in", "out"] {
                let Ok(w) = Self::filter_wire(place, dir) else {
                    continue;
                };
                for (_, r) in w.reports() {
                    rows.push(json!({
                        "at": describe(place), "dir": dir, "name": r.name,
                        "description": r.description, "passed": r.passed,
                        "drops": r.drops.iter().map(|(reason, n)| json!({"reason": reason, "n": n})).collect::<Vec<_>>(),
                    }));
                }
            }
        }
        Ok(Value::Array(rows))
    }

    fn switch_entry(&self, name: &str) -> Result<SwitchEntry, ErrorBody> {
        self.switches().get(name).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("switch {name:?}: no such switch"),
            )
        })
    }

    fn switch_owned(&self, uid: u32, name: &str) -> Result<Arc<Switch>, ErrorBody> {
        let e = self.switch_entry(name)?;
        if !self.is_admin(uid) && e.owner != uid {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "switch {name:?} belongs to uid {}; uid {uid} may change only its own switches",
                    e.owner
                ),
            ));
        }
        Ok(e.sw)
    }

    /// Resolves a target the caller may act on (filter, capture).
    fn place(&self, uid: u32, at: &Target) -> Result<Place, ErrorBody> {
        match (&at.vnet, &at.dev, &at.switch, at.port) {
            (vnet, Some(dev), None, None) => {
                let vname = vnet.as_deref().unwrap_or("vnet0");
                let v = self.owned_vnet(uid, vname)?;
                let wires = v
                    .enter(|| {
                        ifnet::with_ifnet(dev, |i| (i.tx_wire().cloned(), i.rx_wire().cloned()))
                    })
                    .map_err(|e| if_err(vname, e))?;
                match wires {
                    (Some(tx), Some(rx)) => Ok(Place::Ifnet {
                        vnet: v,
                        dev: dev.clone(),
                        tx,
                        rx,
                    }),
                    _ => Err(err(
                        ErrorKind::Invalid,
                        format!(
                            "vnet {vname:?}: {dev} is the loopback, which has no link to filter or capture"
                        ),
                    )),
                }
            }
            (None, None, Some(sw), port) => {
                let s = self.switch_owned(uid, sw)?;
                match port {
                    None => Ok(Place::Switch(s)),
                    Some(n) => {
                        let p = s.port(n).ok_or_else(|| {
                            err(ErrorKind::NotFound, format!("switch {sw:?}: no port {n}"))
                        })?;
                        Ok(Place::Port {
                            tx: Arc::clone(p.from_client()),
                            rx: Arc::clone(p.to_client()),
                            sw: s,
                            port: n,
                        })
                    }
                }
            }
            _ => Err(err(
                ErrorKind::BadRequest,
                "name an interface (vnet and dev), a switch port (switch and port) or a switch",
            )),
        }
    }

    /// Carries out a switch or filter request; `None` if `op` is not one.
    pub(super) fn run_l2(&self, op: &Op, uid: u32) -> Option<Result<Value, ErrorBody>> {
        Some(match op {
            Op::SwitchAdd {
                name,
                mode,
                aging,
                max_macs,
            } => self.switch_add(uid, name, *mode, *aging, *max_macs),
            Op::SwitchSet {
                name,
                mode,
                aging,
                max_macs,
            } => self.switch_owned(uid, name).map(|sw| {
                if let Some(m) = mode {
                    sw.set_mode(*m);
                }
                if let Some(a) = aging {
                    sw.set_aging(Duration::from_secs(*a));
                }
                if let Some(n) = max_macs {
                    sw.set_max_macs(*n);
                }
                Value::Null
            }),
            Op::SwitchDel { name } => self.switch_owned(uid, name).map(|sw| {
                self.switches().lock().remove(name);
                sw.destroy();
                self.kick_all();
                log::info!("switch {name:?} destroyed");
                Value::Null
            }),
            Op::SwitchShow { name } => self.switch_show(uid, name.as_deref()),
            Op::SwitchPortAdd { switch, kind, host } => self.switch_port_add(uid, switch, kind, host),
            Op::SwitchPortDel { switch, port } => self.switch_owned(uid, switch).and_then(|sw| {
                match sw.port(*port).map(|p| p.kind().clone()) {
                    None => Err(err(
                        ErrorKind::NotFound,
                        format!("switch {switch:?}: no port {port}"),
                    )),
                    Some(ifnet::PortKind::Vnet { ifname }) => Err(err(
                        ErrorKind::Invalid,
                        format!(
                            "switch {switch:?}: port {port} is interface {ifname:?} of a vnet; delete it there (link del)"
                        ),
                    )),
                    Some(_) => {
                        sw.remove_port(*port);
                        Ok(Value::Null)
                    }
                }
            }),
            Op::FilterAdd { .. } => self.filter_add(uid, op),
            Op::FilterDel { at, dir, name } => self.filter_del(uid, at, dir, name),
            Op::FilterShow { at } => self.filter_show(uid, at),
            Op::LinkAddPort {
                vnet,
                name,
                switch,
            } => self.owned_vnet(uid, vnet).and_then(|v| {
                let (sw, d) = self.may_plug(uid, switch)?;
                self.registry()
                    .check_link(&v, "port")
                    .map_err(|m| err(ErrorKind::PermissionDenied, format!("vnet {vnet:?}: {m}")))?;
                ifnet::port(&v, name, &sw).map_err(|e| if_err(vnet, e))?;
                self.police(&v, name, d.as_ref())?;
                Ok(Value::Null)
            }),
            _ => return None,
        })
    }

    fn switch_add(
        &self,
        uid: u32,
        name: &str,
        mode: Option<SwitchMode>,
        aging: Option<u64>,
        max_macs: Option<usize>,
    ) -> Result<Value, ErrorBody> {
        if !valid_switch_name(name) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "switch name {name:?} is invalid: use 1 to 15 letters, digits, '-', '_' or '.'"
                ),
            ));
        }
        let mut map = self.switches().lock();
        if map.contains_key(name) {
            return Err(err(
                ErrorKind::Exists,
                format!("switch {name:?} already exists"),
            ));
        }
        let sw = Switch::new(name, mode.unwrap_or(SwitchMode::Learning));
        if let Some(a) = aging {
            sw.set_aging(Duration::from_secs(a));
        }
        if let Some(n) = max_macs {
            sw.set_max_macs(n);
        }
        map.insert(name.to_string(), SwitchEntry { sw, owner: uid });
        log::info!("switch {name:?} created by uid {uid}");
        Ok(Value::Null)
    }

    fn switch_port_add(
        &self,
        uid: u32,
        switch: &str,
        kind: &str,
        host: &str,
    ) -> Result<Value, ErrorBody> {
        let sw = self.switch_owned(uid, switch)?;
        let packet = match kind {
            "tap" => false,
            "af_packet" => true,
            _ => {
                return Err(err(
                    ErrorKind::Invalid,
                    format!("port kind {kind:?}: use tap or af_packet"),
                ));
            }
        };
        if !self.is_admin(uid) {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!("switch {switch:?}: ports to the host are root's to create (uid {uid})"),
            ));
        }
        let io = self.host_io();
        let (port, name) = ifnet::host_port(&sw, host, packet, io)
            .map_err(|e| if_err(&format!("switch {switch}"), e))?;
        log::info!("switch {switch:?}: port {port} is {kind} {name:?}");
        Ok(json!({ "port": port, "host": name }))
    }

    fn switch_show(&self, uid: u32, name: Option<&str>) -> Result<Value, ErrorBody> {
        // Root sees every switch; a user sees theirs whole, and of a
        // switch delegated to them only their own ports (no MAC table:
        // other tenants' stations are not theirs to see).
        let admin = self.is_admin(uid);
        let delegated = |n: &str| {
            self.delegations()
                .find(uid, &super::tenancy::Uplink::Switch(n.to_string()))
                .is_some()
        };
        let list: Vec<(String, SwitchEntry)> = match name {
            Some(n) => {
                let e = self.switch_entry(n)?;
                if !admin && e.owner != uid && !delegated(n) {
                    return Err(err(
                        ErrorKind::PermissionDenied,
                        format!(
                            "switch {n:?} belongs to uid {}; uid {uid} may see only its own switches and those delegated to it",
                            e.owner
                        ),
                    ));
                }
                vec![(n.to_string(), e)]
            }
            None => self
                .switches()
                .all()
                .into_iter()
                .filter(|(n, e)| admin || e.owner == uid || delegated(n))
                .collect(),
        };
        let whole = |e: &SwitchEntry| admin || e.owner == uid;
        let theirs = |p: &ifnet::switch::Port| {
            p.to_client()
                .rx_owner()
                .and_then(|id| self.registry().get(id))
                .is_some_and(|v| v.owner() == uid)
                || matches!(p.kind(), ifnet::PortKind::Remote { uid: u, .. } if *u == uid)
        };
        let now = self.now();
        Ok(Value::Array(
            list.into_iter()
                .map(|(name, e)| {
                    let sw = &e.sw;
                    let ports: Vec<Value> = sw
                        .ports()
                        .iter()
                        .filter(|p| whole(&e) || theirs(p))
                        .map(|p| {
                            let (kind, what, vnet) = match p.kind() {
                                ifnet::PortKind::Vnet { ifname } => (
                                    "vnet",
                                    ifname.clone(),
                                    p.to_client()
                                        .rx_owner()
                                        .and_then(|id| self.registry().get(id))
                                        .map(|v| v.name().to_string()),
                                ),
                                ifnet::PortKind::Tap { host } => ("tap", host.clone(), None),
                                ifnet::PortKind::Packet { host } => {
                                    ("af_packet", host.clone(), None)
                                }
                                ifnet::PortKind::Remote { uid, pid } => {
                                    ("uplink", format!("uid {uid} pid {pid}"), None)
                                }
                            };
                            json!({
                                "port": p.id(), "kind": kind, "name": what, "vnet": vnet,
                                "stats": p.stats(),
                            })
                        })
                        .collect();
                    let macs: Vec<Value> = sw
                        .macs(now)
                        .into_iter()
                        .filter(|_| whole(&e))
                        .map(|m| {
                            json!({
                                "mac": m.mac.to_string(), "port": m.port,
                                "age_ms": m.age.total_millis(),
                            })
                        })
                        .collect();
                    json!({
                        "name": name, "mode": sw.mode(), "owner": e.owner,
                        "aging": sw.aging().secs(), "max_macs": sw.max_macs(),
                        "stats": sw.stats(), "ports": ports, "macs": macs,
                    })
                })
                .collect(),
        ))
    }

    /// Serves a capture request on `conn`: writes the reply, then the
    /// capture file, until the client hangs up, `count` frames are out,
    /// or what is captured goes away. Returns when the connection is done.
    pub(super) fn capture(
        &self,
        op: Op,
        uid: u32,
        conn: &UnixStream,
        id: u64,
    ) -> Result<(), ErrorBody> {
        let Op::Capture {
            at,
            filter,
            count,
            snaplen,
            pcapng,
        } = op
        else {
            return Err(err(ErrorKind::BadRequest, "not a capture"));
        };
        let place = self.place(uid, &at)?;
        let matcher = match &filter {
            Some(expr) => Some(self.compile_matcher(expr)?),
            None => None,
        };
        let snaplen = snaplen.unwrap_or(65535).clamp(64, 262_144);
        let (sink, rx, lost) = capture::channel(matcher, snaplen as usize);
        // The stages go in, and come out however this ends.
        let mut stages: Vec<(Arc<Wire>, u64)> = Vec::new();
        let mut sw_stage: Option<(Arc<Switch>, u64)> = None;
        let alive: Box<dyn Fn() -> bool> = match &place {
            Place::Ifnet { tx, rx, .. } | Place::Port { tx, rx, .. } => {
                for w in [tx, rx] {
                    stages.push((Arc::clone(w), w.push_stage(sink.stage())));
                }
                let (tx, rx) = (Arc::clone(tx), Arc::clone(rx));
                Box::new(move || tx.is_alive() || rx.is_alive())
            }
            Place::Switch(sw) => {
                sw_stage = Some((Arc::clone(sw), sw.push_stage(sink.stage())));
                let name = sw.name().to_string();
                Box::new(move || self.switches().get(&name).is_some())
            }
        };
        drop(sink);
        let what = describe(&place);
        log::info!("capture of {what} started for uid {uid}");
        let r = self.stream_capture(conn, id, &rx, (count, snaplen, pcapng), &*alive);
        for (w, id) in stages {
            w.remove_stage(id);
        }
        if let Some((sw, id)) = sw_stage {
            sw.remove_stage(id);
        }
        log::info!(
            "capture of {what} ended: {} written, {} lost",
            r.unwrap_or(0),
            lost.load(Ordering::Relaxed)
        );
        Ok(())
    }

    /// Writes the reply and then records until done; returns how many.
    fn stream_capture(
        &self,
        conn: &UnixStream,
        id: u64,
        rx: &std::sync::mpsc::Receiver<Record>,
        (count, snaplen, pcapng): (Option<u64>, u32, bool),
        alive: &dyn Fn() -> bool,
    ) -> std::io::Result<u64> {
        // The reply first, as for any request.
        super::server::write_ok(
            conn,
            id,
            json!({ "linktype": "ethernet", "snaplen": snaplen }),
        )?;
        // A client that hangs up is noticed by a thread blocked reading
        // from it (a capture client sends nothing more).
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let mut rd = conn.try_clone()?;
            let gone = Arc::clone(&gone);
            std::thread::Builder::new()
                .name("vnetd-capture-watch".into())
                .spawn(move || {
                    let mut b = [0u8; 64];
                    while let Ok(n) = std::io::Read::read(&mut rd, &mut b) {
                        if n == 0 {
                            break;
                        }
                    }
                    gone.store(true, Ordering::SeqCst);
                })?
        };
        // The driver's instants become wall-clock times.
        let epoch = {
            let now = self.now();
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(StdDuration::from_micros(now.total_micros().max(0) as u64))
        };
        let spool = Spool::default();
        let mut out = PcapOut::new(spool.clone(), snaplen, pcapng)?;
        let mut conn_w = conn;
        let mut send = |spool: &Spool| -> std::io::Result<()> {
            let bytes = std::mem::take(&mut *spool.0.lock().unwrap_or_else(|p| p.into_inner()));
            conn_w.write_all(&bytes)
        };
        send(&spool)?;
        let mut written = 0u64;
        let limit = count.unwrap_or(u64::MAX);
        let result = loop {
            if written >= limit || gone.load(Ordering::SeqCst) {
                break Ok(written);
            }
            match rx.recv_timeout(StdDuration::from_millis(100)) {
                Ok(rec) => {
                    let mut batch = vec![rec];
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    let mut failed = None;
                    for r in batch {
                        if written >= limit {
                            break;
                        }
                        let ts =
                            epoch + StdDuration::from_micros(r.at.total_micros().max(0) as u64);
                        if let Err(e) = out.write(ts, &r) {
                            failed = Some(e);
                            break;
                        }
                        written += 1;
                    }
                    if let Some(e) = failed.or_else(|| send(&spool).err()) {
                        break Err(e);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if !alive() {
                        break Ok(written);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(written),
            }
        };
        drop(out);
        // Ends the watcher's read, and tells the client the file is whole.
        let _ = conn.shutdown(std::net::Shutdown::Both);
        let _ = watcher.join();
        result
    }
}

/// How a place is named in messages and listings.
fn describe(place: &Place) -> String {
    match place {
        Place::Ifnet { vnet, dev, .. } => format!("{} {dev}", vnet.name()),
        Place::Port { sw, port, .. } => format!("{}:{port}", sw.name()),
        Place::Switch(sw) => format!("switch {}", sw.name()),
    }
}

/// A prefix, or a bare address as a host prefix (`10.0.0.1` is
/// `10.0.0.1/32`).
pub(super) fn parse_prefix(s: &str) -> Option<smoltcp::wire::IpCidr> {
    let s = s.trim();
    if s.contains('/') {
        s.parse().ok()
    } else {
        let a: smoltcp::wire::IpAddress = s.parse().ok()?;
        let len = if matches!(a, smoltcp::wire::IpAddress::Ipv4(_)) {
            32
        } else {
            128
        };
        Some(smoltcp::wire::IpCidr::new(a, len))
    }
}

/// A list of prefixes (each item may hold several, comma-separated);
/// `what` names them in the refusal.
pub(super) fn parse_prefixes(
    v: &[String],
    what: &str,
) -> Result<Vec<smoltcp::wire::IpCidr>, ErrorBody> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| {
            parse_prefix(s).ok_or_else(|| {
                err(
                    ErrorKind::Invalid,
                    format!("{what} {:?} is not an address or prefix", s.trim()),
                )
            })
        })
        .collect()
}

/// A list of prefixes as listings print them (what does not parse is
/// kept as it is, for vnetd to refuse with the reason).
pub(super) fn canonical_prefixes(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| parse_prefix(s).map_or_else(|| s.trim().to_string(), |c| c.to_string()))
        .collect()
}

/// A MAC address in the form listings use: lower case, colons.
pub(super) fn mac_text(b: [u8; 6]) -> String {
    b.map(|x| format!("{x:02x}")).join(":")
}

/// `02:00:5e:00:00:01` (or with dashes).
pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut b = [0u8; 6];
    for (o, p) in b.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(b)
}

/// The capture file being written: pcap or pcapng, by the `pcap-file` crate.
enum PcapOut<W: Write> {
    Pcap(pcap_file::pcap::PcapWriter<W>),
    PcapNg(pcap_file::pcapng::PcapNgWriter<W>),
}

impl<W: Write> PcapOut<W> {
    fn new(w: W, snaplen: u32, ng: bool) -> std::io::Result<PcapOut<W>> {
        let io = |e: pcap_file::PcapError| std::io::Error::other(e.to_string());
        if ng {
            let mut wr = pcap_file::pcapng::PcapNgWriter::new(w).map_err(io)?;
            let idb = pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen,
                options: vec![],
            };
            wr.write_pcapng_block(idb).map_err(io)?;
            Ok(PcapOut::PcapNg(wr))
        } else {
            let header = pcap_file::pcap::PcapHeader {
                snaplen,
                datalink: pcap_file::DataLink::ETHERNET,
                ..Default::default()
            };
            Ok(PcapOut::Pcap(
                pcap_file::pcap::PcapWriter::with_header(w, header).map_err(io)?,
            ))
        }
    }

    fn write(&mut self, ts: StdDuration, r: &Record) -> std::io::Result<()> {
        let io = |e: pcap_file::PcapError| std::io::Error::other(e.to_string());
        match self {
            PcapOut::Pcap(w) => w
                .write_packet(&pcap_file::pcap::PcapPacket::new(ts, r.orig_len, &r.data))
                .map(|_| ())
                .map_err(io),
            PcapOut::PcapNg(w) => {
                let epb = pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: ts,
                    original_len: r.orig_len,
                    data: std::borrow::Cow::Borrowed(&r.data),
                    options: vec![],
                };
                w.write_pcapng_block(epb).map(|_| ()).map_err(io)
            }
        }
    }
}

/// Where the pcap writer puts its bytes until a batch is sent.
#[derive(Debug, Default, Clone)]
struct Spool(Arc<Mutex<Vec<u8>>>);

impl Write for Spool {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
