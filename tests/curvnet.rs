//! The current-vnet scope: nesting, restore order, use outside any scope,
//! re-entrant access, and subsystem construction order.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use vnet::vnet::{
    self as vn, CurVnet, CurVnetError, InitCx, PerVnet, Registry, SysInitOrder, TeardownCx,
    VnetVars,
};

#[test]
fn nesting_restores_the_outer_vnet() {
    let reg = Registry::new(1);
    let a = reg.create("a", None, 0).unwrap();
    let b = reg.create("b", None, 0).unwrap();
    let ga = CurVnet::set(&a);
    assert_eq!(vn::curvnet().unwrap().id(), a.id());
    {
        let _gb = CurVnet::set(&b);
        assert_eq!(vn::curvnet().unwrap().id(), b.id());
        b.enter(|| assert_eq!(vn::curvnet().unwrap().name(), "b"));
        a.enter(|| assert_eq!(vn::curvnet().unwrap().name(), "a"));
        assert_eq!(vn::curvnet().unwrap().id(), b.id());
    }
    assert_eq!(vn::curvnet().unwrap().id(), a.id());
    drop(ga);
    assert_eq!(vn::curvnet().unwrap_err(), CurVnetError::NoVnet);
}

#[test]
fn use_outside_any_scope_is_an_error_that_says_so() {
    let _reg = Registry::new(1);
    let e = vn::curvnet().unwrap_err();
    assert_eq!(e, CurVnetError::NoVnet);
    assert!(e.to_string().contains("vnet scope"), "{e}");
    assert_eq!(
        vnet_stack_addrs(),
        Err(
            "no current vnet: this code must run inside a vnet scope (CurVnet::set or Vnet::enter)"
                .into()
        )
    );
}

fn vnet_stack_addrs() -> Result<usize, String> {
    vnet::stack::addrs()
        .map(|a| a.len())
        .map_err(|e| e.to_string())
}

#[test]
fn an_out_of_order_restore_panics_and_leaves_the_thread_sane() {
    let reg = Registry::new(1);
    let a = reg.create("a", None, 0).unwrap();
    let b = reg.create("b", None, 0).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let ga = CurVnet::set(&a);
        let gb = CurVnet::set(&b);
        drop(ga); // wrong order
        drop(gb);
    }));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("out of order"), "{msg}");
    assert_eq!(vn::curvnet().unwrap_err(), CurVnetError::NoVnet);
    a.enter(|| assert_eq!(vn::curvnet().unwrap().id(), a.id()));
}

#[test]
fn re_entering_a_vnets_state_is_an_error_not_a_deadlock() {
    let reg = Registry::new(1);
    let a = reg.create("a", None, 0).unwrap();
    a.enter(|| {
        let inner = vn::with_vars(|_| vn::with_vars(|_| ()));
        assert_eq!(inner, Ok(Err(CurVnetError::Reentrant(a.id()))));
        // And it is usable again afterwards.
        assert!(vn::with_vars(|_| ()).is_ok());
    });
}

#[test]
fn a_destroyed_vnet_reports_so_to_stale_scopes() {
    let reg = Registry::new(1);
    let a = reg.create("a", None, 0).unwrap();
    reg.destroy(a.id(), false).unwrap();
    a.enter(|| {
        assert_eq!(vn::with_vars(|_| ()), Err(CurVnetError::Destroyed(a.id())));
    });
}

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

struct Early;
struct Late;
struct Registered;

impl PerVnet for Early {
    const NAME: &'static str = "early";
    const ORDER: SysInitOrder = SysInitOrder(10);
    fn init(cx: &mut InitCx<'_>) -> Self {
        log(format!("init early {}", cx.name));
        Early
    }
    fn uninit(&mut self, _rest: &mut VnetVars, cx: &mut TeardownCx) {
        log(format!("uninit early {}", cx.id));
    }
}

impl PerVnet for Late {
    const NAME: &'static str = "late";
    const ORDER: SysInitOrder = SysInitOrder(20);
    fn init(cx: &mut InitCx<'_>) -> Self {
        // Runs after Early and inside the new vnet's scope.
        assert!(cx.vars.get_mut::<Early>().is_some());
        assert_eq!(vn::curvnet().unwrap().id(), cx.id);
        log(format!("init late {}", cx.name));
        Late
    }
    fn uninit(&mut self, rest: &mut VnetVars, cx: &mut TeardownCx) {
        assert!(rest.get_mut::<Early>().is_some(), "lower orders outlive us");
        log(format!("uninit late {}", cx.id));
    }
}

impl PerVnet for Registered {
    const NAME: &'static str = "registered-late";
    const ORDER: SysInitOrder = SysInitOrder(15);
    fn init(cx: &mut InitCx<'_>) -> Self {
        log(format!("init registered {}", cx.name));
        Registered
    }
}

#[test]
fn subsystems_init_in_order_uninit_in_reverse_and_late_ones_reach_every_vnet() {
    let reg = Registry::bare(1);
    reg.register::<Early>();
    reg.register::<Late>();
    take_log();
    let a = reg.create("a", None, 0).unwrap();
    assert_eq!(take_log(), ["init early a", "init late a"]);
    reg.register::<Registered>();
    assert_eq!(take_log(), ["init registered vnet0", "init registered a"]);
    assert_eq!(reg.subsystems(), ["early", "registered-late", "late"]);
    let report = reg.destroy(a.id(), false).unwrap();
    assert_eq!(
        take_log(),
        [
            format!("uninit late {}", a.id()),
            format!("uninit early {}", a.id())
        ]
    );
    assert_eq!(report.subsystems, ["late", "registered-late", "early"]);
    a.enter(|| {
        assert_eq!(
            vn::with::<Early, _>(|_| ()),
            Err(CurVnetError::Destroyed(a.id()))
        )
    });
}
