//! How the benchmark binaries report: one Markdown table row per
//! measurement, the median with the range over the rounds.

/// Median, minimum and maximum.
pub fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (med, v[0], v[v.len() - 1])
}

/// Prints a row `| what | median unit | min – max | rounds |`; returns the
/// median.
pub fn row(what: &str, unit: &str, v: Vec<f64>) -> f64 {
    let n = v.len();
    let (med, lo, hi) = summary(v);
    println!("| {what} | {med:.2} {unit} | {lo:.2} – {hi:.2} | {n} |");
    med
}
