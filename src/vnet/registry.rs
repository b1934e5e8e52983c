//! The registry of vnets: create, look up (lock-free), list, destroy.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::curvnet::CurVnet;
use super::limits::{Account, Charge, Limits, QuotaError, Resource, Restrict, Scope};
use super::sysinit::{
    InitCx, PerVnet, SlotTrait, SubsysDesc, TeardownCx, TeardownReport, VnetVars,
};

/// A vnet's number, unique for the life of its registry; `vnet0` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VnetId(pub u32);

impl VnetId {
    /// The base vnet.
    pub const VNET0: VnetId = VnetId(0);
}

impl fmt::Display for VnetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Life cycle of a vnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VnetState {
    /// Usable.
    Active = 0,
    /// Being torn down; no new work is accepted.
    Dying = 1,
    /// Torn down; only stale handles remain.
    Dead = 2,
}

/// One vnet: its identity and its per-vnet state.
pub struct Vnet {
    id: VnetId,
    name: Box<str>,
    parent: Option<VnetId>,
    owner: u32,
    seed: u64,
    state: AtomicU8,
    vars: Mutex<Option<VnetVars>>,
    /// What it and everything under it use, and their limits.
    account: Arc<Account>,
    /// Its own restrictions (it is also held to its ancestors').
    restrict: Mutex<Restrict>,
    /// Its place in its parent's (or owner's) vnet count.
    counted: Mutex<Option<Charge>>,
}

impl fmt::Debug for Vnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vnet")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("parent", &self.parent)
            .field("state", &self.state())
            .finish()
    }
}

impl Vnet {
    /// Its number.
    pub fn id(&self) -> VnetId {
        self.id
    }
    /// Its unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its parent; `None` only for `vnet0`.
    pub fn parent(&self) -> Option<VnetId> {
        self.parent
    }
    /// The uid that owns it (0 for root's and for `vnet0`).
    pub fn owner(&self) -> u32 {
        self.owner
    }
    /// Where it is in its life cycle.
    pub fn state(&self) -> VnetState {
        match self.state.load(Ordering::Acquire) {
            0 => VnetState::Active,
            1 => VnetState::Dying,
            _ => VnetState::Dead,
        }
    }

    /// Runs `f` with this vnet as the current vnet.
    pub fn enter<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let _scope = CurVnet::set(self);
        f()
    }

    pub(super) fn lock_vars(&self) -> MutexGuard<'_, Option<VnetVars>> {
        // A panic inside a subsystem poisons the lock; the state itself is
        // still structurally sound (every operation leaves it consistent
        // before it can panic), so later calls carry on.
        self.vars.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its account: what it and its descendants use, and its limits.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// Its own restrictions (see [`Registry::check_addr`] for the chain).
    pub fn restrict(&self) -> Restrict {
        self.restrict
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces its own restrictions.
    pub fn set_restrict(&self, r: Restrict) {
        *self.restrict.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// A summary for listings.
    pub fn info(&self) -> VnetInfo {
        VnetInfo {
            id: self.id,
            name: self.name.to_string(),
            parent: self.parent,
            owner: self.owner,
            state: self.state(),
        }
    }
}

/// A snapshot of a vnet's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnetInfo {
    /// Its number.
    pub id: VnetId,
    /// Its name.
    pub name: String,
    /// Its parent.
    pub parent: Option<VnetId>,
    /// Owning uid.
    pub owner: u32,
    /// Life-cycle state.
    pub state: VnetState,
}

/// Why a registry operation was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Names are 1 to 32 characters of letters, digits, `-`, `_`, `.`,
    /// not starting with `-`.
    #[error(
        "vnet name {0:?} is invalid: use 1 to 32 letters, digits, '-', '_' or '.', not starting with '-'"
    )]
    BadName(String),
    /// A vnet with that name exists.
    #[error("vnet {0:?} already exists")]
    Exists(String),
    /// No such vnet.
    #[error("vnet {0:?}: no such vnet")]
    NoSuchVnet(String),
    /// `vnet0` cannot be destroyed.
    #[error("vnet0 is the base vnet and cannot be destroyed")]
    Vnet0,
    /// It has children; destroy them first or destroy recursively.
    #[error(
        "vnet {name:?} has {children} child vnet(s); destroy them first or destroy recursively"
    )]
    HasChildren {
        /// The vnet.
        name: String,
        /// How many children it has.
        children: usize,
    },
    /// The parent is being destroyed.
    #[error("vnet {0:?} is being destroyed")]
    Dying(String),
    /// Vnet numbers are exhausted.
    #[error("no vnet numbers left")]
    IdsExhausted,
    /// Called from inside that vnet's own state (`vnet::with`), which
    /// teardown would have to wait for.
    #[error("vnet {0:?} cannot be destroyed from inside its own state")]
    InUse(String),
    /// A quota refused it.
    #[error(transparent)]
    Quota(#[from] QuotaError),
}

const SHARDS: usize = 64;

struct Writer {
    next_id: u32,
    children: HashMap<VnetId, Vec<VnetId>>,
    subsystems: Vec<SubsysDesc>,
}

/// All the vnets of one process (or one simulated world).
///
/// Nothing in it is static: any number of registries coexist, which is how
/// tests build independent worlds side by side. Lookups by id and by name are
/// lock-free (arc-swap snapshots, sharded so that a write copies only a
/// sixty-fourth of the table); creation and destruction are serialized.
pub struct Registry {
    by_id: Vec<ArcSwap<HashMap<VnetId, Arc<Vnet>>>>,
    by_name: Vec<ArcSwap<HashMap<Box<str>, Arc<Vnet>>>>,
    hasher: std::collections::hash_map::RandomState,
    writer: Mutex<Writer>,
    seed: u64,
    users: Mutex<Users>,
}

/// The users' accounts.
#[derive(Default)]
struct Users {
    accounts: HashMap<u32, Arc<Account>>,
    /// The limits of a user with none of their own.
    default: Limits,
    /// Users whose own limits were set (`quota set`).
    set: HashMap<u32, Limits>,
    /// Users with no limits (root, and the user the server runs as).
    unlimited: Vec<u32>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("vnets", &self.len())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// ", a restriction inherited from X" when the rule is an ancestor's.
fn inherited(v: &Vnet, rule: &Vnet) -> String {
    if v.id == rule.id {
        " (restriction of the vnet itself)".into()
    } else {
        format!(" (restriction inherited from vnet {:?})", rule.name())
    }
}

impl Users {
    fn limits_of(&self, uid: u32) -> Limits {
        if self.unlimited.contains(&uid) {
            Limits::NONE
        } else {
            self.set.get(&uid).copied().unwrap_or(self.default)
        }
    }
}

fn mix(seed: u64, id: u32) -> u64 {
    // SplitMix64 finaliser: spreads one seed into independent per-vnet seeds.
    let mut z = seed ^ (u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Registry {
    /// A registry with the core subsystems (interfaces, the IP stack) and
    /// `vnet0`, seeded with `seed` (the simulation driver replays exactly
    /// from the same seed).
    pub fn new(seed: u64) -> Arc<Registry> {
        let reg = Self::bare(seed);
        reg.register::<crate::ifnet::IfnetTable>();
        reg.register::<crate::stack::Inet>();
        reg.register::<crate::sockets::dns::Resolv>();
        reg
    }

    /// A registry with no subsystems at all, only `vnet0`; for tests of the
    /// vnet machinery itself.
    pub fn bare(seed: u64) -> Arc<Registry> {
        let reg = Registry {
            by_id: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(HashMap::new()))
                .collect(),
            by_name: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(HashMap::new()))
                .collect(),
            hasher: Default::default(),
            writer: Mutex::new(Writer {
                next_id: 1,
                children: HashMap::new(),
                subsystems: Vec::new(),
            }),
            seed,
            users: Mutex::new(Users {
                unlimited: vec![0],
                ..Users::default()
            }),
        };
        let vnet0 = Arc::new(Vnet {
            id: VnetId::VNET0,
            name: "vnet0".into(),
            parent: None,
            owner: 0,
            seed: mix(seed, 0),
            state: AtomicU8::new(VnetState::Active as u8),
            vars: Mutex::new(Some(VnetVars::default())),
            account: Account::new(
                Scope::Vnet(VnetId::VNET0, "vnet0".into()),
                None,
                Limits::NONE,
            ),
            restrict: Mutex::new(Restrict::default()),
            counted: Mutex::new(None),
        });
        reg.publish(&vnet0);
        Arc::new(reg)
    }

    fn shard<K: Hash + ?Sized>(&self, k: &K) -> usize {
        (self.hasher.hash_one(k) as usize) % SHARDS
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, v: &Arc<Vnet>) {
        let s = &self.by_id[self.shard(&v.id)];
        let mut m = HashMap::clone(&s.load());
        m.insert(v.id, Arc::clone(v));
        s.store(Arc::new(m));
        let s = &self.by_name[self.shard(&*v.name)];
        let mut m = HashMap::clone(&s.load());
        m.insert(v.name.clone(), Arc::clone(v));
        s.store(Arc::new(m));
    }

    fn unpublish(&self, v: &Vnet) {
        let s = &self.by_id[self.shard(&v.id)];
        let mut m = HashMap::clone(&s.load());
        m.remove(&v.id);
        s.store(Arc::new(m));
        let s = &self.by_name[self.shard(&*v.name)];
        let mut m = HashMap::clone(&s.load());
        m.remove(&*v.name);
        s.store(Arc::new(m));
    }

    /// Registers a subsystem (`VNET_SYSINIT`). Every existing vnet gets its
    /// slot constructed now, inside its own scope; later vnets get it at
    /// creation. Registering the same type twice does nothing.
    pub fn register<T: PerVnet>(&self) {
        let desc = SubsysDesc::of::<T>();
        let existing = {
            let mut w = self.lock_writer();
            if w.subsystems.iter().any(|d| d.type_id == desc.type_id) {
                return;
            }
            let pos = w
                .subsystems
                .iter()
                .position(|d| d.order > desc.order)
                .unwrap_or(w.subsystems.len());
            w.subsystems.insert(pos, SubsysDesc::of::<T>());
            // Vnets created from now on get the slot at creation; the ones
            // listed here get it below, without the writer lock held (a
            // thread inside a vnet's state may be waiting for it).
            self.list()
        };
        for v in existing {
            let _scope = CurVnet::set(&v);
            let mut g = v.lock_vars();
            if let Some(vars) = g.as_mut()
                && vars.get_mut::<T>().is_none()
            {
                let slot = Self::build(&desc, &v, vars);
                vars.insert_ordered(&desc, slot);
            }
        }
    }

    fn build(desc: &SubsysDesc, v: &Vnet, vars: &mut VnetVars) -> Box<dyn SlotTrait> {
        let mut cx = InitCx {
            id: v.id,
            name: &v.name,
            account: &v.account,
            seed: v.seed ^ u64::from(desc.order.0),
            vars,
        };
        (desc.init)(&mut cx)
    }

    /// Creates a vnet under `parent` (`vnet0` when `None`), owned by `owner`.
    ///
    /// # Errors
    /// A bad or taken name, a missing or dying parent, or no ids left.
    pub fn create(
        &self,
        name: &str,
        parent: Option<VnetId>,
        owner: u32,
    ) -> Result<Arc<Vnet>, RegistryError> {
        self.create_limited(name, parent, owner, Limits::NONE, Restrict::default())
    }

    /// Creates a vnet as [`Registry::create`] does, with limits of its own
    /// (on it and its descendants together) and restrictions. It counts as
    /// one vnet in its parent's account and up (a vnet under `vnet0`, in
    /// its owner's).
    ///
    /// # Errors
    /// As [`Registry::create`], and a vnet quota reached.
    pub fn create_limited(
        &self,
        name: &str,
        parent: Option<VnetId>,
        owner: u32,
        limits: Limits,
        restrict: Restrict,
    ) -> Result<Arc<Vnet>, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::BadName(name.to_string()));
        }
        let mut w = self.lock_writer();
        if self.by_name(name).is_some() {
            return Err(RegistryError::Exists(name.to_string()));
        }
        let parent = parent.unwrap_or(VnetId::VNET0);
        let p = self
            .get(parent)
            .ok_or_else(|| RegistryError::NoSuchVnet(parent.to_string()))?;
        if p.state() != VnetState::Active {
            return Err(RegistryError::Dying(p.name.to_string()));
        }
        // Counted where it lives: in its parent's account and up, or, under
        // vnet0, in its owner's.
        let above = if parent == VnetId::VNET0 {
            self.user_account(owner)
        } else {
            Arc::clone(&p.account)
        };
        let counted = above.charge(Resource::Vnets, 1)?;
        let id = VnetId(w.next_id);
        w.next_id = w
            .next_id
            .checked_add(1)
            .ok_or(RegistryError::IdsExhausted)?;
        let vnet = Arc::new(Vnet {
            id,
            name: name.into(),
            parent: Some(parent),
            owner,
            seed: mix(self.seed, id.0),
            state: AtomicU8::new(VnetState::Active as u8),
            vars: Mutex::new(None),
            account: Account::new(Scope::Vnet(id, name.into()), Some(above), limits),
            restrict: Mutex::new(restrict),
            counted: Mutex::new(Some(counted)),
        });
        {
            let _scope = CurVnet::set(&vnet);
            let mut vars = VnetVars::default();
            for desc in &w.subsystems {
                let slot = Self::build(desc, &vnet, &mut vars);
                vars.insert_ordered(desc, slot);
            }
            *vnet.lock_vars() = Some(vars);
        }
        w.children.entry(parent).or_default().push(id);
        self.publish(&vnet);
        log::debug!("vnet {id} {name:?} created under {parent}");
        Ok(vnet)
    }

    /// Destroys a vnet, synchronously and completely (see the module docs).
    /// With `recursive`, its children go first, deepest first.
    ///
    /// # Errors
    /// `vnet0`, an unknown vnet, or children without `recursive`.
    pub fn destroy(&self, id: VnetId, recursive: bool) -> Result<TeardownReport, RegistryError> {
        if id == VnetId::VNET0 {
            return Err(RegistryError::Vnet0);
        }
        if super::curvnet::holds(id) {
            return Err(RegistryError::InUse(id.to_string()));
        }
        let mut order = Vec::new();
        {
            let w = self.lock_writer();
            let v = self
                .get(id)
                .ok_or_else(|| RegistryError::NoSuchVnet(id.to_string()))?;
            let kids = w.children.get(&id).map_or(0, Vec::len);
            if kids > 0 && !recursive {
                return Err(RegistryError::HasChildren {
                    name: v.name.to_string(),
                    children: kids,
                });
            }
            // Post-order: children before their parent.
            fn walk(w: &Writer, id: VnetId, out: &mut Vec<VnetId>) {
                if let Some(kids) = w.children.get(&id) {
                    for k in kids {
                        walk(w, *k, out);
                    }
                }
                out.push(id);
            }
            walk(&w, id, &mut order);
            for vid in &order {
                if let Some(v) = self.get(*vid) {
                    v.state.store(VnetState::Dying as u8, Ordering::Release);
                }
            }
        }
        let mut report = TeardownReport::default();
        for vid in order {
            if let Some(v) = self.get(vid) {
                report.merge(self.teardown_one(&v));
            }
        }
        Ok(report)
    }

    fn teardown_one(&self, v: &Arc<Vnet>) -> TeardownReport {
        let mut cx = TeardownCx::new(v.id);
        {
            let _scope = CurVnet::set(v);
            // Waits for whoever is working on the vnet right now.
            let vars = v.lock_vars().take();
            if let Some(vars) = vars {
                vars.teardown(&mut cx);
            }
        }
        v.state.store(VnetState::Dead as u8, Ordering::Release);
        v.counted.lock().unwrap_or_else(|p| p.into_inner()).take();
        {
            let mut w = self.lock_writer();
            self.unpublish(v);
            w.children.remove(&v.id);
            if let Some(p) = v.parent
                && let Some(sibs) = w.children.get_mut(&p)
            {
                sibs.retain(|c| *c != v.id);
                if sibs.is_empty() {
                    w.children.remove(&p);
                }
            }
        }
        let TeardownCx {
            mut report,
            deferred,
            ..
        } = cx;
        for d in deferred {
            d(self, &mut report);
        }
        report.vnets.push(v.id);
        report.wake.retain(|w| *w != v.id);
        log::debug!("vnet {} {:?} destroyed: {:?}", v.id, v.name, report);
        report
    }

    fn lock_users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account of user `uid` (made on first use, with the default
    /// limits unless root set theirs).
    pub fn user_account(&self, uid: u32) -> Arc<Account> {
        let mut u = self.lock_users();
        if let Some(a) = u.accounts.get(&uid) {
            return Arc::clone(a);
        }
        let limits = u.limits_of(uid);
        let a = Account::new(Scope::User(uid), None, limits);
        u.accounts.insert(uid, Arc::clone(&a));
        a
    }

    /// Exempts `uid` from user quotas (the user a server runs as).
    pub fn set_unlimited(&self, uid: u32) {
        let mut u = self.lock_users();
        if !u.unlimited.contains(&uid) {
            u.unlimited.push(uid);
        }
        if let Some(a) = u.accounts.get(&uid) {
            a.set_limits(&Limits::NONE);
        }
    }

    /// Sets the limits of users with none of their own.
    pub fn set_default_user_limits(&self, l: Limits) {
        let mut u = self.lock_users();
        u.default = l;
        let uids: Vec<u32> = u.accounts.keys().copied().collect();
        for uid in uids {
            let l = u.limits_of(uid);
            u.accounts[&uid].set_limits(&l);
        }
    }

    /// Sets (or, with `None`, clears back to the default) the limits of
    /// user `uid`; returns those now in force.
    pub fn set_user_limits(&self, uid: u32, l: Option<Limits>) -> Limits {
        let mut u = self.lock_users();
        match l {
            Some(l) => u.set.insert(uid, l),
            None => u.set.remove(&uid),
        };
        let l = u.limits_of(uid);
        if let Some(a) = u.accounts.get(&uid) {
            a.set_limits(&l);
        }
        l
    }

    /// The users whose limits root set (not the default), in uid order.
    pub fn user_limits(&self) -> Vec<(u32, Limits)> {
        let u = self.lock_users();
        let mut v: Vec<(u32, Limits)> = u.set.iter().map(|(k, l)| (*k, *l)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The users with an account, in uid order.
    pub fn users(&self) -> Vec<Arc<Account>> {
        let u = self.lock_users();
        let mut v: Vec<_> = u.accounts.values().cloned().collect();
        v.sort_by_key(|a| match a.scope() {
            Scope::User(uid) => *uid,
            Scope::Vnet(..) => u32::MAX,
        });
        v
    }

    /// `v` and its ancestors up to (not including) `vnet0`, nearest first.
    pub fn lineage(&self, v: &Arc<Vnet>) -> Vec<Arc<Vnet>> {
        let mut out = vec![Arc::clone(v)];
        let mut p = v.parent;
        while let Some(id) = p.filter(|id| *id != VnetId::VNET0) {
            match self.get(id) {
                Some(x) => {
                    p = x.parent;
                    out.push(x);
                }
                None => break,
            }
        }
        out
    }

    /// Whether `v` may give itself address `a`: refused by the first
    /// restriction, on it or an ancestor, that does not allow it.
    ///
    /// # Errors
    /// The refusal, naming the vnet whose restriction refused.
    pub fn check_addr(&self, v: &Arc<Vnet>, a: &smoltcp::wire::IpCidr) -> Result<(), String> {
        for x in self.lineage(v) {
            let r = x.restrict();
            if !r.allows_ip(&a.address()) {
                let allowed: Vec<String> = r
                    .addrs
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                return Err(format!(
                    "address {a} is outside what vnet {:?} may use ({}){}",
                    x.name(),
                    allowed.join(", "),
                    inherited(v, &x)
                ));
            }
        }
        Ok(())
    }

    /// Whether `v` may make a link of `kind`.
    ///
    /// # Errors
    /// The refusal, naming the vnet whose restriction refused.
    pub fn check_link(&self, v: &Arc<Vnet>, kind: &str) -> Result<(), String> {
        for x in self.lineage(v) {
            let r = x.restrict();
            if !r.allows_link(kind) {
                return Err(format!(
                    "links of type {kind} are not allowed in vnet {:?} (allowed: {}){}",
                    x.name(),
                    r.links.unwrap_or_default().join(", "),
                    inherited(v, &x)
                ));
            }
        }
        Ok(())
    }

    /// Whether `v` may forward.
    ///
    /// # Errors
    /// The refusal, naming the vnet whose restriction refused.
    pub fn check_forward(&self, v: &Arc<Vnet>) -> Result<(), String> {
        for x in self.lineage(v) {
            if x.restrict().no_forward {
                return Err(format!(
                    "forwarding is not allowed in vnet {:?}{}",
                    x.name(),
                    inherited(v, &x)
                ));
            }
        }
        Ok(())
    }

    /// The vnet with this number.
    pub fn get(&self, id: VnetId) -> Option<Arc<Vnet>> {
        self.by_id[self.shard(&id)].load().get(&id).cloned()
    }

    /// The vnet with this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<Vnet>> {
        self.by_name[self.shard(name)].load().get(name).cloned()
    }

    /// `vnet0`.
    pub fn vnet0(&self) -> Arc<Vnet> {
        self.get(VnetId::VNET0).expect("vnet0 always exists")
    }

    /// All vnets, ordered by number.
    pub fn list(&self) -> Vec<Arc<Vnet>> {
        let mut all: Vec<Arc<Vnet>> = self
            .by_id
            .iter()
            .flat_map(|s| s.load().values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|v| v.id);
        all
    }

    /// How many vnets exist (`vnet0` included).
    pub fn len(&self) -> usize {
        self.by_id.iter().map(|s| s.load().len()).sum()
    }

    /// Always false: `vnet0` exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The children of a vnet.
    pub fn children(&self, id: VnetId) -> Vec<VnetId> {
        self.lock_writer()
            .children
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the registered subsystems, in construction order.
    pub fn subsystems(&self) -> Vec<&'static str> {
        self.lock_writer()
            .subsystems
            .iter()
            .map(|d| d.name)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Tear every vnet down (children first) so that a dropped world
        // releases its links and sockets as a destroyed vnet does.
        let mut ids: Vec<VnetId> = self.list().iter().map(|v| v.id).collect();
        ids.sort();
        for id in ids.into_iter().rev() {
            if id != VnetId::VNET0 {
                let _ = self.destroy(id, true);
            }
        }
        if let Some(v0) = self.get(VnetId::VNET0) {
            self.teardown_one(&v0);
        }
    }
}
