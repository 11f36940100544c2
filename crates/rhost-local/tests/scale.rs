//! Per-call cost against the number of reservations, ours and upstream's. Prints a table, asserts
//! nothing about time. Wall time depends on the machine's load; CPU time (user + system of the
//! plugin process) much less. Run by hand (release binaries are more telling):
//!
//! ```text
//! cargo build --release -p rhost-local --bins
//! cargo test --release -p rhost-local --test scale -- --ignored --nocapture
//! ```

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cni_testkit::temp_dir;
use common::*;
use serde_json::{json, Value};

/// `n` reservations written as upstream writes them, spread over a /16.
fn prefill(data: &Path, n: usize) {
    let dir = net_dir(data);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let addr = format!("10.60.{}.{}", 1 + i / 250, 1 + i % 250);
        fs::write(dir.join(addr), format!("pre{i}\r\neth0")).unwrap();
    }
}

/// CPU time of waited-for children so far.
fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (wall, CPU) of one plugin run.
fn timed(f: impl FnOnce()) -> (Duration, Duration) {
    let (t, c) = (Instant::now(), children_cpu());
    f();
    (t.elapsed(), children_cpu() - c)
}

fn median(v: &[(Duration, Duration)]) -> String {
    let ms = |mut x: Vec<Duration>| {
        x.sort();
        x[x.len() / 2].as_secs_f64() * 1e3
    };
    format!(
        "{:6.2} {:5.2}",
        ms(v.iter().map(|p| p.0).collect()),
        ms(v.iter().map(|p| p.1).collect())
    )
}

fn config(data: &Path) -> Value {
    conf(
        data,
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.60.0.0/16"}]]}),
    )
}

#[test]
#[ignore = "timing table, run by hand with --ignored --nocapture"]
fn per_call_cost_against_reservations() {
    let rounds = 40;
    {
        let data = temp_dir("rhl-scale");
        let c = config(&data);
        let v: Vec<_> = (0..rounds)
            .map(|_| timed(|| drop(call(&ours(), "VERSION", "", "", &c))))
            .collect();
        println!(
            "process start-up (VERSION), wall and CPU ms: {}",
            median(&v)
        );
    }
    println!("median ms per call, wall then CPU:");
    println!(
        "{:>8} {:>11} {:>12} {:>12} {:>12} {:>12}",
        "reserved", "plugin", "ADD", "DEL", "ADD retry", "rebuild"
    );
    for n in [10, 1000, 5000] {
        for (name, bin) in [("rhost-local", ours()), ("host-local", upstream())] {
            let data = temp_dir("rhl-scale");
            prefill(&data, n);
            let c = config(&data);
            call(&bin, "ADD", "warm", "eth0", &c).ok();
            let (mut add, mut del, mut retry) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..rounds {
                let id = format!("t{i}");
                add.push(timed(|| {
                    drop(call(&bin, "ADD", &id, "eth0", &c).ok().clone())
                }));
                if name == "rhost-local" {
                    retry.push(timed(|| {
                        drop(call(&bin, "ADD", &id, "eth0", &c).ok().clone())
                    }));
                }
                del.push(timed(|| {
                    call(&bin, "DEL", &id, "eth0", &c).assert_ok();
                }));
            }
            // A change behind our back (as upstream's ADD makes one): the next call rebuilds.
            let (retry, rebuild) = if name == "rhost-local" {
                let v: Vec<_> = (0..rounds / 4)
                    .map(|i| {
                        let f = net_dir(&data).join(format!("10.60.250.{i}"));
                        fs::write(f, "x\r\neth0").unwrap();
                        timed(|| {
                            call(&bin, "DEL", "nobody", "eth0", &c).assert_ok();
                        })
                    })
                    .collect();
                (median(&retry), median(&v))
            } else {
                ("fails".into(), "-".into())
            };
            println!(
                "{n:>8} {name:>11} {:>12} {:>12} {retry:>12} {rebuild:>12}",
                median(&add),
                median(&del)
            );
        }
    }
}
