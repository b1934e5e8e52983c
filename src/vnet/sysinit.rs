//! Declaring per-vnet state: subsystems, their order, construction and teardown.

use std::any::{Any, TypeId};
use std::fmt;

use super::registry::{Registry, VnetId};

/// Where a subsystem stands in the construction order of a vnet.
///
/// Lower orders are constructed first and torn down last, as FreeBSD's
/// `SI_SUB_*` orders do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysInitOrder(pub u32);

impl SysInitOrder {
    /// Interfaces and links (`SI_SUB_INIT_IF`).
    pub const IFNET: SysInitOrder = SysInitOrder(100);
    /// The IP stack: addresses, routes, neighbors, sockets (`SI_SUB_PROTO_DOMAIN`).
    pub const INET: SysInitOrder = SysInitOrder(200);
    /// Anything layered on the stack (firewalls, services).
    pub const LATE: SysInitOrder = SysInitOrder(1000);
}

/// What a subsystem is given when it is constructed for a vnet.
pub struct InitCx<'a> {
    /// The vnet being built.
    pub id: VnetId,
    /// Its name.
    pub name: &'a str,
    /// Its account, which its subsystems charge for what they hold.
    pub account: &'a std::sync::Arc<super::limits::Account>,
    /// A seed for this vnet's random numbers (ISNs, ports, ids); derived from
    /// the registry's seed so that a simulation replays exactly.
    pub seed: u64,
    /// The subsystems already constructed (all of lower order).
    pub vars: &'a mut VnetVars,
}

/// A subsystem's per-vnet state (FreeBSD's `VNET_DEFINE`).
///
/// Each implementing type is one slot in every vnet, constructed by
/// [`PerVnet::init`] when the vnet is created and torn down by
/// [`PerVnet::uninit`] when it is destroyed.
pub trait PerVnet: Any + Send + Sized + 'static {
    /// Name used in reports and errors.
    const NAME: &'static str;
    /// Construction order.
    const ORDER: SysInitOrder;
    /// Builds this subsystem's state for a new vnet (`VNET_SYSINIT`). Runs
    /// inside the new vnet's scope, after every subsystem of lower order.
    fn init(cx: &mut InitCx<'_>) -> Self;
    /// Releases what this subsystem holds (`VNET_SYSUNINIT`). Runs inside the
    /// dying vnet's scope, before every subsystem of lower order; `rest` holds
    /// those (still alive). The default releases nothing beyond the drop.
    fn uninit(&mut self, rest: &mut VnetVars, cx: &mut TeardownCx) {
        let _ = (rest, cx);
    }
}

pub(super) trait Slot: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn uninit(&mut self, rest: &mut VnetVars, cx: &mut TeardownCx);
}

impl<T: PerVnet> Slot for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn uninit(&mut self, rest: &mut VnetVars, cx: &mut TeardownCx) {
        PerVnet::uninit(self, rest, cx)
    }
}

struct Entry {
    type_id: TypeId,
    name: &'static str,
    order: SysInitOrder,
    slot: Box<dyn Slot>,
}

/// All per-vnet state of one vnet: one slot per registered subsystem, in
/// construction order.
#[derive(Default)]
pub struct VnetVars {
    entries: Vec<Entry>,
}

impl fmt::Debug for VnetVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.name))
            .finish()
    }
}

impl VnetVars {
    /// Subsystem `T`'s state, if `T` is registered.
    pub fn get_mut<T: PerVnet>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter_mut()
            .find(|e| e.type_id == id)
            .and_then(|e| e.slot.as_any_mut().downcast_mut())
    }

    /// Two different subsystems' state at once.
    ///
    /// # Panics
    /// Panics if `A` and `B` are the same type.
    pub fn get2_mut<A: PerVnet, B: PerVnet>(&mut self) -> Option<(&mut A, &mut B)> {
        assert_ne!(TypeId::of::<A>(), TypeId::of::<B>(), "get2_mut of one type");
        let (mut a, mut b) = (None, None);
        for e in self.entries.iter_mut() {
            if e.type_id == TypeId::of::<A>() {
                a = e.slot.as_any_mut().downcast_mut::<A>();
            } else if e.type_id == TypeId::of::<B>() {
                b = e.slot.as_any_mut().downcast_mut::<B>();
            }
        }
        Some((a?, b?))
    }

    /// Names of the subsystems present, in construction order.
    pub fn subsystems(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    pub(super) fn insert_ordered(&mut self, desc: &SubsysDesc, slot: Box<dyn Slot>) {
        let pos = self
            .entries
            .iter()
            .position(|e| e.order > desc.order)
            .unwrap_or(self.entries.len());
        self.entries.insert(
            pos,
            Entry {
                type_id: desc.type_id,
                name: desc.name,
                order: desc.order,
                slot,
            },
        );
    }

    /// Tears every subsystem down, last-constructed first.
    pub(super) fn teardown(mut self, cx: &mut TeardownCx) {
        while let Some(mut e) = self.entries.pop() {
            e.slot.uninit(&mut self, cx);
            cx.report.subsystems.push(e.name);
        }
    }
}

/// How to build one subsystem's slot; kept by the registry.
pub(super) struct SubsysDesc {
    pub type_id: TypeId,
    pub name: &'static str,
    pub order: SysInitOrder,
    pub init: fn(&mut InitCx<'_>) -> Box<dyn Slot>,
}

impl SubsysDesc {
    pub fn of<T: PerVnet>() -> SubsysDesc {
        SubsysDesc {
            type_id: TypeId::of::<T>(),
            name: T::NAME,
            order: T::ORDER,
            init: |cx| Box::new(T::init(cx)),
        }
    }
}

pub(super) use Slot as SlotTrait;

/// What a destroyed vnet released.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    /// Vnets destroyed (more than one when destroying recursively).
    pub vnets: Vec<VnetId>,
    /// Subsystems torn down, in teardown order.
    pub subsystems: Vec<&'static str>,
    /// Sockets freed.
    pub sockets_closed: usize,
    /// TCP connections that were open and were reset.
    pub connections_reset: usize,
    /// Interfaces destroyed with the vnet.
    pub interfaces_destroyed: usize,
    /// Interfaces given back to their home vnet.
    pub interfaces_returned: usize,
    /// Addresses removed.
    pub addresses_removed: usize,
    /// Routes removed.
    pub routes_removed: usize,
    /// Neighbor cache entries flushed.
    pub neighbors_flushed: usize,
    /// Other vnets that have frames to read because of the teardown (resets
    /// sent to their peers); a driver should poll them.
    pub wake: Vec<VnetId>,
}

impl TeardownReport {
    pub(super) fn merge(&mut self, o: TeardownReport) {
        self.vnets.extend(o.vnets);
        self.subsystems.extend(o.subsystems);
        self.sockets_closed += o.sockets_closed;
        self.connections_reset += o.connections_reset;
        self.interfaces_destroyed += o.interfaces_destroyed;
        self.interfaces_returned += o.interfaces_returned;
        self.addresses_removed += o.addresses_removed;
        self.routes_removed += o.routes_removed;
        self.neighbors_flushed += o.neighbors_flushed;
        for w in o.wake {
            if !self.wake.contains(&w) {
                self.wake.push(w);
            }
        }
    }
}

/// Work to run after the dying vnet's lock is released, with the registry at
/// hand (for example, entering another vnet to give an interface back).
pub type Deferred = Box<dyn FnOnce(&Registry, &mut TeardownReport) + Send>;

/// What subsystems are given while a vnet is torn down.
pub struct TeardownCx {
    /// The vnet being destroyed.
    pub id: VnetId,
    /// Counts of what was released, filled in by the subsystems.
    pub report: TeardownReport,
    pub(super) deferred: Vec<Deferred>,
}

impl TeardownCx {
    pub(super) fn new(id: VnetId) -> Self {
        TeardownCx {
            id,
            report: TeardownReport::default(),
            deferred: Vec::new(),
        }
    }

    /// Queues work to run once the vnet's own state is gone and its lock
    /// released (so it may enter other vnets without nesting locks).
    pub fn defer(&mut self, f: impl FnOnce(&Registry, &mut TeardownReport) + Send + 'static) {
        self.deferred.push(Box::new(f));
    }
}
