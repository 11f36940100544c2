//! `rcni status` for an operator: per network its chain, ranges and attachments in a table,
//! then the anomalies, each with what was found.

use super::model::{Attachment, Network, Status};

/// Container IDs are 64 hex digits; the table shows the first 12, as crictl does.
const SHORT_ID: usize = 12;

pub fn render(s: &Status) -> String {
    let mut out = String::new();
    if s.networks.is_empty() {
        out += &format!("no networks in {}\n", s.conf_dir);
    }
    for n in &s.networks {
        network(&mut out, n);
        out.push('\n');
    }
    for k in &s.skipped {
        out += &format!("skipped {k}\n");
    }
    if let Some(n) = s.runtime_sandboxes {
        out += &format!(
            "the runtime lists {n} sandbox{}\n",
            if n == 1 { "" } else { "es" }
        );
    }
    if s.anomalies.is_empty() {
        out += "no anomalies\n";
        return out;
    }
    out += &format!("anomalies ({}):\n", s.anomalies.len());
    let rows: Vec<Vec<String>> = s
        .anomalies
        .iter()
        .map(|a| {
            let who = match (&a.container_id, &a.ifname) {
                (Some(c), Some(i)) => format!("{}/{i}", short(c)),
                (Some(c), None) => short(c),
                (None, _) => a.host_veth.clone().unwrap_or_default(),
            };
            vec![
                a.kind.as_str().to_string(),
                a.network.clone().unwrap_or_default(),
                who,
                a.detail.clone(),
            ]
        })
        .collect();
    out += &table(&rows, "  ");
    out
}

fn short(id: &str) -> String {
    id.chars().take(SHORT_ID).collect()
}

fn network(out: &mut String, n: &Network) {
    *out += &format!(
        "network {} ({}, cniVersion {})\n",
        n.name, n.file, n.cni_version
    );
    let mut line = format!("  chain: {}", n.plugins.join(" → "));
    if let Some(b) = &n.bridge {
        line += &format!("; bridge {b}");
    }
    if let Some(i) = &n.ipam {
        line += &format!("; ipam {} in {}", i.ipam_type, i.data_dir);
    }
    *out += &line;
    out.push('\n');
    for r in &n.ranges {
        *out += &format!(
            "  range set {}: {} ({}-{}): {} used, {} free\n",
            r.range_set, r.subnet, r.start, r.end, r.used, r.free
        );
    }
    for r in &n.host_routes {
        let state = if r.installed { "installed" } else { "MISSING" };
        *out += &format!("  host route {} via {}: {state}\n", r.dst, r.gw);
    }
    for p in &n.problems {
        *out += &format!("  problem: {p}\n");
    }
    if n.attachments.is_empty() {
        *out += "  no attachments\n";
        return;
    }
    let mut rows = vec![[
        "CONTAINER",
        "IFNAME",
        "ADDRESSES",
        "HOST VETH",
        "NETNS",
        "MASQUERADE",
        "ROUTES",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(n.attachments.iter().map(row));
    *out += &table(&rows, "  ");
}

fn row(a: &Attachment) -> Vec<String> {
    let or_dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let veth = match (&a.host_veth, a.host_veth_present) {
        (Some(v), Some(false)) => format!("{v} (gone)"),
        (Some(v), _) => v.clone(),
        (None, _) => "-".into(),
    };
    let netns = match (&a.netns, a.netns_alive) {
        (Some(p), Some(false)) => format!("{p} (gone)"),
        (Some(p), _) => p.clone(),
        (None, _) => "-".into(),
    };
    let mut addresses = or_dash(&a.addresses);
    if !a.allocated && !a.addresses.is_empty() {
        addresses += " (cached)";
    }
    vec![
        short(&a.container_id),
        a.ifname.clone().unwrap_or_else(|| "-".into()),
        addresses,
        veth,
        netns,
        or_dash(&a.masquerade),
        or_dash(&a.routes),
    ]
}

/// Columns padded to their widest cell; the last column unpadded.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line += cell;
            } else {
                line += &format!("{cell:<w$}  ", w = widths[c]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}
