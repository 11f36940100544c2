//! The table's rows: each section's figures, ours against upstream's, with the targets.

use std::collections::BTreeMap;
use std::path::Path;

use crate::measure::Storm;
use crate::stats::Single;

/// metric, ours, upstream, ours/upstream, target.
pub type Row = (String, String, String, String, String);

fn ratio(o: f64, u: f64) -> String {
    if u > 0.0 {
        format!("{:.2}", o / u)
    } else {
        "-".into()
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn row(metric: String, ours: String, upstream: String, ratio: String, target: String) -> Row {
    (metric, ours, upstream, ratio, target)
}

/// A row comparing a measure of ours with upstream's, shown with `decimals`.
pub fn compared(metric: &str, (o, u): (f64, f64), decimals: usize, target: String) -> Row {
    let (o_text, u_text) = (format!("{o:.decimals$}"), format!("{u:.decimals$}"));
    row(metric.into(), o_text, u_text, ratio(o, u), target)
}

/// The single-pod medians and p99s, against upstream and the floor (`floor`: ADD, DEL medians).
pub fn single_rows(o: &Single, u: &Single, (floor_add, floor_del): (f64, f64)) -> Vec<Row> {
    let add_target = verdict(o.add_med <= 0.2 * u.add_med);
    let del_target = verdict(o.del_med <= 1.3 * floor_del);
    vec![
        compared(
            "ADD median (ms)",
            (o.add_med, u.add_med),
            1,
            format!("<= 0.20 of upstream: {add_target}"),
        ),
        compared("ADD p99 (ms)", (o.add_p99, u.add_p99), 1, String::new()),
        compared(
            "DEL median (ms)",
            (o.del_med, u.del_med),
            1,
            format!("<= 1.3x floor ({floor_del:.1}): {del_target}"),
        ),
        compared("DEL p99 (ms)", (o.del_p99, u.del_p99), 1, String::new()),
        row(
            "ADD vs floor".into(),
            format!("{:.1}x", o.add_med / floor_add),
            format!("{:.1}x", u.add_med / floor_add),
            String::new(),
            format!(
                "ours <= 3x floor ({floor_add:.2} ms): {}",
                verdict(o.add_med <= 3.0 * floor_add)
            ),
        ),
        row(
            "DEL vs floor".into(),
            format!("{:.2}x", o.del_med / floor_del),
            format!("{:.2}x", u.del_med / floor_del),
            String::new(),
            String::new(),
        ),
    ]
}

pub fn storm_rows(n: usize, so: &Storm, su: &Storm) -> Vec<Row> {
    // Each of the four within 0.15 of upstream's (the goal at kubelet's max-pods 250).
    let target = |o: f64, u: f64| format!("<= 0.15 of upstream: {}", verdict(o <= 0.15 * u));
    [
        ("ADD wall", so.add_wall, su.add_wall),
        ("ADD p99", so.add_p99, su.add_p99),
        ("DEL wall", so.del_wall, su.del_wall),
        ("DEL p99", so.del_p99, su.del_p99),
    ]
    .into_iter()
    .map(|(what, o, u)| compared(&format!("storm {n} {what} (ms)"), (o, u), 0, target(o, u)))
    .collect()
}

/// One more pod's ADD and DEL at each scale point (pods, ADD, DEL medians), ours and upstream's,
/// the growth from the first point to the last, and the floor's at the same points.
pub fn scale_rows(
    ours: &[(usize, f64, f64)],
    theirs: &[(usize, f64, f64)],
    floors: &[(usize, f64, f64)],
) -> Vec<Row> {
    let mut rows: Vec<Row> = ours
        .iter()
        .zip(theirs)
        .map(|((n, oa, od), (_, ua, ud))| {
            row(
                format!("ADD / DEL with {n} pods (ms)"),
                format!("{oa:.1} / {od:.1}"),
                format!("{ua:.1} / {ud:.1}"),
                ratio(oa + od, ua + ud),
                String::new(),
            )
        })
        .collect();
    let growth = |points: &[(usize, f64, f64)]| match (points.first(), points.last()) {
        (Some(a), Some(b)) => (b.1 + b.2) / (a.1 + a.2),
        _ => f64::NAN,
    };
    let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
        return rows;
    };
    let (g, ug, fg) = (growth(ours), growth(theirs), growth(floors));
    rows.push(row(
        format!("cost at {} / cost at {}", last.0, first.0),
        format!("{g:.2}"),
        format!("{ug:.2}"),
        String::new(),
        format!("ours <= 1.2: {}", verdict(g <= 1.2)),
    ));
    for (n, fa, fd) in floors {
        rows.push(row(
            format!("floor ADD / DEL with {n} pods (ms)"),
            format!("{fa:.2} / {fd:.1}"),
            String::new(),
            String::new(),
            String::new(),
        ));
    }
    rows.push(row(
        format!("floor cost at {} / cost at {}", last.0, first.0),
        format!("{fg:.2}"),
        String::new(),
        String::new(),
        String::new(),
    ));
    rows
}

/// Peak RSS (KiB per executable) of one verb: each plugin against its upstream counterpart,
/// then the largest process of each chain.
pub fn rss_rows(
    verb: &str,
    ours: &BTreeMap<String, u64>,
    theirs: &BTreeMap<String, u64>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (on, un) in [("rbridge", "bridge"), ("rhost-local", "host-local")] {
        let a = ours.get(on).copied().unwrap_or(0);
        let b = theirs.get(un).copied().unwrap_or(0);
        rows.push(row(
            format!("peak RSS {verb}: {on} vs {un} (KiB)"),
            a.to_string(),
            b.to_string(),
            ratio(a as f64, b as f64),
            String::new(),
        ));
    }
    let a = ours.values().copied().max().unwrap_or(0);
    let b = theirs.values().copied().max().unwrap_or(0);
    rows.push(row(
        format!("peak RSS {verb}: largest process (KiB)"),
        a.to_string(),
        b.to_string(),
        ratio(a as f64, b as f64),
        format!("<= 0.5 of upstream: {}", verdict(a * 2 <= b)),
    ));
    rows
}

fn size_kib(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 1024).unwrap_or(0)
}

/// Binary sizes, ours (in `bin`) against upstream's (in `up`) where there is a counterpart.
pub fn size_rows(bin: &Path, up: &Path) -> Vec<Row> {
    [
        ("rbridge", "bridge"),
        ("rhost-local", "host-local"),
        ("rmasq", ""),
        ("rroutes", ""),
    ]
    .into_iter()
    .map(|(ours, theirs)| {
        let os = size_kib(&bin.join(ours));
        let us = if theirs.is_empty() {
            0
        } else {
            size_kib(&up.join(theirs))
        };
        let (upstream, r) = if us > 0 {
            (format!("{us} ({theirs})"), ratio(os as f64, us as f64))
        } else {
            ("-".into(), String::new())
        };
        row(
            format!("binary size {ours} (KiB)"),
            os.to_string(),
            upstream,
            r,
            String::new(),
        )
    })
    .collect()
}

pub fn print(rows: &[Row]) {
    println!("| metric | ours | upstream | ours/upstream | target |");
    println!("|---|---|---|---|---|");
    for (m, o, u, r, t) in rows {
        println!("| {m} | {o} | {u} | {r} | {t} |");
    }
}
