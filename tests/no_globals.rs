//! No network state may live in a global: per-vnet state goes through the
//! vnet machinery. This test reads the sources and fails on any mutable
//! global (a `static mut`, a static holding a lock, atomic, cell or lazy
//! value, a `thread_local!`) outside the one place allowed: the current-vnet
//! thread-local itself.

use std::fs;
use std::path::{Path, PathBuf};

const ALLOWED_THREAD_LOCAL: &str = "src/vnet/curvnet.rs";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Why `line` declares mutable global state, if it does.
fn global_state(file: &str, line: &str) -> Option<&'static str> {
    let l = line.trim_start();
    if l.starts_with("//") {
        return None;
    }
    if l.contains("static mut ") {
        return Some("static mut");
    }
    if l.contains("lazy_static!") {
        return Some("lazy_static!");
    }
    if file.ends_with(ALLOWED_THREAD_LOCAL) {
        return None;
    }
    if l.contains("thread_local!") {
        return Some("thread_local!");
    }
    let is_static = l.starts_with("static ")
        || l.starts_with("pub static ")
        || l.starts_with("pub(crate) static ");
    const INTERIOR: [&str; 9] = [
        "Mutex", "RwLock", "Atomic", "Cell", "Lazy", "OnceLock", "OnceCell", "ArcSwap", "Condvar",
    ];
    if is_static && INTERIOR.iter().any(|t| l.contains(t)) {
        return Some("static with interior mutability");
    }
    None
}

#[test]
fn the_detector_catches_what_it_must() {
    for bad in [
        "static mut COUNT: u32 = 0;",
        "static ROUTES: Mutex<Vec<u32>> = Mutex::new(Vec::new());",
        "pub static NEXT: AtomicU32 = AtomicU32::new(0);",
        "static CACHE: once_cell::sync::Lazy<HashMap<u32, u32>> = Lazy::new(HashMap::new);",
        "pub(crate) static TABLE: OnceLock<Table> = OnceLock::new();",
        "thread_local! { static X: RefCell<u8> = RefCell::new(0); }",
    ] {
        assert!(
            global_state("src/stack/x.rs", bad).is_some(),
            "missed: {bad}"
        );
    }
    assert!(
        global_state(
            "src/stack/sysctl.rs",
            "pub static TUNABLES: &[Tunable] = &["
        )
        .is_none()
    );
    assert!(global_state(ALLOWED_THREAD_LOCAL, "thread_local! {").is_none());
}

#[test]
fn no_network_state_lives_in_a_global() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 10, "found the sources");
    let mut found = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for (n, line) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            if let Some(why) = global_state(&rel, line) {
                found.push(format!("{rel}:{}: {why}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "global state outside the vnet machinery (declare it per vnet with PerVnet):\n{}",
        found.join("\n")
    );
}
