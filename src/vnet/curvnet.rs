//! The current vnet: a thread-local stack of scopes, and the one accessor
//! convention for per-vnet state.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use super::registry::{Vnet, VnetId};
use super::sysinit::{PerVnet, VnetVars};

/// Why the current vnet (or its state) could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CurVnetError {
    /// Called outside any vnet scope.
    #[error(
        "no current vnet: this code must run inside a vnet scope (CurVnet::set or Vnet::enter)"
    )]
    NoVnet,
    /// The thread-local is gone because the thread is exiting.
    #[error("the current-vnet context is gone: this thread is shutting down")]
    ThreadShuttingDown,
    /// This thread already holds the state of that vnet further up its stack.
    #[error("vnet {0}: its state is already borrowed by this thread (re-entrant access)")]
    Reentrant(VnetId),
    /// The vnet has been (or is being) destroyed.
    #[error("vnet {0} has been destroyed")]
    Destroyed(VnetId),
    /// The subsystem asked for is not registered in this vnet's registry.
    #[error("no per-vnet subsystem {0} is registered")]
    NoSubsystem(&'static str),
}

struct Context {
    /// The scope stack; the last entry is the current vnet.
    scopes: Vec<Arc<Vnet>>,
    /// Vnets whose state this thread has locked right now (at most a few).
    held: Vec<VnetId>,
}

thread_local! {
    // The only thread-local of the crate, and no network state: just which
    // vnet this thread is working for (FreeBSD's `curvnet`).
    static CURVNET: RefCell<Context> = const {
        RefCell::new(Context {
            scopes: Vec::new(),
            held: Vec::new(),
        })
    };
}

/// A scope in which a vnet is the current vnet (`CURVNET_SET`).
///
/// Dropping it restores the vnet that was current before
/// (`CURVNET_RESTORE`). It cannot leave its thread, and guards must be dropped
/// in the reverse order of their creation.
///
/// # Panics
/// Dropping a guard while a guard created after it is still alive panics:
/// that is a bug in the caller, like a mismatched `CURVNET_RESTORE`.
///
/// A guard cannot be sent to another thread:
///
/// ```compile_fail
/// let reg = vnet::vnet::Registry::new(0);
/// let g = vnet::vnet::CurVnet::set(&reg.vnet0());
/// std::thread::spawn(move || drop(g));
/// ```
#[must_use = "the vnet is current only while the guard lives"]
pub struct CurVnet {
    depth: usize,
    id: VnetId,
    _not_send: PhantomData<*const ()>,
}

impl CurVnet {
    /// Makes `vnet` the current vnet of this thread until the guard drops.
    ///
    /// # Panics
    /// Panics if the thread-local context is gone (the thread is exiting);
    /// use [`CurVnet::try_set`] where that can happen.
    pub fn set(vnet: &Arc<Vnet>) -> CurVnet {
        Self::try_set(vnet).expect("CurVnet::set")
    }

    /// Like [`CurVnet::set`], but reports a thread that is shutting down.
    ///
    /// # Errors
    /// [`CurVnetError::ThreadShuttingDown`].
    pub fn try_set(vnet: &Arc<Vnet>) -> Result<CurVnet, CurVnetError> {
        CURVNET
            .try_with(|c| {
                let mut c = c.borrow_mut();
                c.scopes.push(Arc::clone(vnet));
                CurVnet {
                    depth: c.scopes.len(),
                    id: vnet.id(),
                    _not_send: PhantomData,
                }
            })
            .map_err(|_| CurVnetError::ThreadShuttingDown)
    }

    /// The vnet this guard made current.
    pub fn id(&self) -> VnetId {
        self.id
    }
}

impl Drop for CurVnet {
    fn drop(&mut self) {
        let depth = self.depth;
        let id = self.id;
        let out_of_order = CURVNET
            .try_with(|c| {
                let mut c = c.borrow_mut();
                let len = c.scopes.len();
                if len == depth {
                    c.scopes.pop();
                    None
                } else {
                    // Unwind to below this scope so the thread is left sane.
                    c.scopes.truncate(depth.saturating_sub(1).min(len));
                    Some(len)
                }
            })
            .unwrap_or(None);
        if let Some(len) = out_of_order
            && !std::thread::panicking()
        {
            panic!(
                "CURVNET_RESTORE out of order: scope of vnet {id} at depth {depth} ended while the scope stack is {len} deep"
            );
        }
    }
}

/// Whether this thread holds the state of vnet `id` right now (inside
/// [`with`] or [`with_vars`] for it).
pub(crate) fn holds(id: VnetId) -> bool {
    CURVNET
        .try_with(|c| c.borrow().held.contains(&id))
        .unwrap_or(false)
}

/// The current vnet of this thread.
///
/// # Errors
/// [`CurVnetError::NoVnet`] outside any scope,
/// [`CurVnetError::ThreadShuttingDown`] while the thread exits.
pub fn curvnet() -> Result<Arc<Vnet>, CurVnetError> {
    CURVNET
        .try_with(|c| c.borrow().scopes.last().cloned())
        .map_err(|_| CurVnetError::ThreadShuttingDown)?
        .ok_or(CurVnetError::NoVnet)
}

/// Runs `f` on the current vnet's whole per-vnet state, locked for the call.
///
/// This and [`with`] are the only way to reach per-vnet state.
///
/// # Errors
/// No current vnet, the vnet destroyed, or the state already held by this
/// thread (see [`CurVnetError`]).
pub fn with_vars<R>(f: impl FnOnce(&mut VnetVars) -> R) -> Result<R, CurVnetError> {
    let vnet = curvnet()?;
    let id = vnet.id();
    let already = CURVNET
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if c.held.contains(&id) {
                true
            } else {
                c.held.push(id);
                false
            }
        })
        .map_err(|_| CurVnetError::ThreadShuttingDown)?;
    if already {
        return Err(CurVnetError::Reentrant(id));
    }
    // Released on every path out, panics included.
    struct Held(VnetId);
    impl Drop for Held {
        fn drop(&mut self) {
            let _ = CURVNET.try_with(|c| c.borrow_mut().held.retain(|h| *h != self.0));
        }
    }
    let _held = Held(id);
    let mut guard = vnet.lock_vars();
    let vars = guard.as_mut().ok_or(CurVnetError::Destroyed(id))?;
    Ok(f(vars))
}

/// Runs `f` on subsystem `T`'s state in the current vnet (FreeBSD's `V_x`).
///
/// # Errors
/// As [`with_vars`], and [`CurVnetError::NoSubsystem`] if `T` is not
/// registered.
pub fn with<T: PerVnet, R>(f: impl FnOnce(&mut T) -> R) -> Result<R, CurVnetError> {
    with_vars(|vars| vars.get_mut::<T>().map(f))?.ok_or(CurVnetError::NoSubsystem(T::NAME))
}
