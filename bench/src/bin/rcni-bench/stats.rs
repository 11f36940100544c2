//! Samples and their summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use rcni_bench::runtime::Exec;

/// Highest peak RSS per executable over the processes of some calls.
pub fn peaks(into: &mut BTreeMap<String, u64>, execs: &[Exec]) {
    for p in execs.iter().flat_map(|e| &e.procs) {
        let v = into.entry(p.name.clone()).or_default();
        *v = (*v).max(p.peak_kib);
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

#[derive(Default)]
pub struct Single {
    pub add_med: f64,
    pub add_p99: f64,
    pub del_med: f64,
    pub del_p99: f64,
    /// Peak RSS (KiB) per executable, ADD and DEL, from traced calls.
    pub add_rss: BTreeMap<String, u64>,
    pub del_rss: BTreeMap<String, u64>,
}

/// Timings and peak memory of single-pod calls, gathered over rounds.
#[derive(Default)]
pub struct Samples {
    pub adds: Vec<f64>,
    pub dels: Vec<f64>,
    pub add_rss: BTreeMap<String, u64>,
    pub del_rss: BTreeMap<String, u64>,
}

impl Samples {
    pub fn absorb(&mut self, other: Samples) {
        self.adds.extend(other.adds);
        self.dels.extend(other.dels);
        for (into, from) in [
            (&mut self.add_rss, other.add_rss),
            (&mut self.del_rss, other.del_rss),
        ] {
            for (name, kib) in from {
                let v = into.entry(name).or_default();
                *v = (*v).max(kib);
            }
        }
    }

    pub fn summary(mut self) -> Single {
        Single {
            add_med: percentile(&mut self.adds, 0.5),
            add_p99: percentile(&mut self.adds, 0.99),
            del_med: percentile(&mut self.dels, 0.5),
            del_p99: percentile(&mut self.dels, 0.99),
            add_rss: self.add_rss,
            del_rss: self.del_rss,
        }
    }
}
