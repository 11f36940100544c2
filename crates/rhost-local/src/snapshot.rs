//! The index snapshot: one line per attachment, `<key> <ip> <ip>...`, sorted by key, after a
//! header line. Written whole by a rebuild; a lookup is a binary search with pread(2), so it
//! reads O(log n) small blocks however many attachments there are.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const HEADER: &str = "rhost-local snapshot v1";
/// Below this many bytes the rest is read and scanned at once.
const SCAN: u64 = 4096;
const BLOCK: usize = 1024;

/// The file content for `entries` (any order; keys must hold no whitespace).
pub fn render<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>) -> String {
    let mut lines: Vec<String> = entries
        .into_iter()
        .map(|(key, ips)| {
            let mut line = key.to_string();
            for ip in ips {
                line.push(' ');
                line.push_str(&ip.to_string());
            }
            line
        })
        .collect();
    lines.sort_by(|a, b| key_of(a.as_bytes()).cmp(key_of(b.as_bytes())));
    let mut out = format!("{HEADER}\n");
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn key_of(line: &[u8]) -> &[u8] {
    line.split(|b| *b == b' ').next().unwrap_or(line)
}

/// The addresses listed for `key`; None when the key is not there. A missing file is NotFound;
/// a file without the header is InvalidData (never trust what we did not write).
pub fn lookup(path: &Path, key: &str) -> io::Result<Option<Vec<IpAddr>>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let head = read_line(&file, 0, len)?;
    if head != HEADER.as_bytes() {
        return Err(io::Error::new(ErrorKind::InvalidData, "not a snapshot"));
    }
    let data = head.len() as u64 + 1;
    let key = key.as_bytes();
    // The key's line, if any, starts in [lo, hi).
    let (mut lo, mut hi) = (data, len);
    while hi - lo > SCAN {
        let mid = lo + (hi - lo) / 2;
        let start = line_start_at_or_after(&file, mid, data, len)?;
        if start >= hi {
            hi = mid;
            continue;
        }
        let line = read_line(&file, start, len)?;
        match key_of(&line).cmp(key) {
            Ordering::Equal => return Ok(Some(parse_ips(&line))),
            Ordering::Less => lo = start + 1,
            Ordering::Greater => hi = start,
        }
    }
    // The rest in one read: the lines starting in [lo, hi), and the end of the last one.
    let start = line_start_at_or_after(&file, lo, data, len)?;
    if start >= hi {
        return Ok(None);
    }
    let end = len.min(hi + BLOCK as u64);
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    let mut off = 0usize;
    while start + (off as u64) < hi {
        let rest = &buf[off..];
        let newline = rest.iter().position(|b| *b == b'\n');
        let line = match newline {
            Some(i) => rest[..i].to_vec(),
            // Longer than the read: only possible for the last line before `hi`.
            None => read_line(&file, start + off as u64, len)?,
        };
        match key_of(&line).cmp(key) {
            Ordering::Equal => return Ok(Some(parse_ips(&line))),
            Ordering::Greater => break,
            Ordering::Less => {}
        }
        match newline {
            Some(i) => off += i + 1,
            None => break,
        }
    }
    Ok(None)
}

fn parse_ips(line: &[u8]) -> Vec<IpAddr> {
    String::from_utf8_lossy(line)
        .split(' ')
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The line starting at `pos` (up to, not including, '\n' or the end).
fn read_line(file: &File, pos: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = pos;
    let mut buf = [0u8; BLOCK];
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
            out.extend_from_slice(&buf[..i]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Ok(out)
}

/// The first position >= `pos` where a line starts (`len` if none).
fn line_start_at_or_after(file: &File, pos: u64, data: u64, len: u64) -> io::Result<u64> {
    if pos <= data {
        return Ok(data);
    }
    // A line starts at `pos` if the byte before it is '\n'.
    let mut at = pos - 1;
    let mut buf = [0u8; BLOCK];
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: usize) -> IpAddr {
        format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)
            .parse()
            .unwrap()
    }

    #[test]
    fn finds_every_key_and_nothing_else() {
        let dir = cni_testkit::temp_dir("rhl-snap");
        let path = dir.join("snap");
        for n in [0usize, 1, 2, 3, 50, 1000, 7000] {
            // Keys of varied length so lines straddle blocks; one with a very long name.
            let keys: Vec<String> = (0..n)
                .map(|i| match i % 3 {
                    0 => format!("{:064x}@eth0", i * 7919),
                    1 => format!("c{i}@net{}", i % 10),
                    _ if i == 5 => format!("{}@eth0", "z".repeat(250)),
                    _ => format!("old{i}"),
                })
                .collect();
            let ips: Vec<Vec<IpAddr>> = (0..n).map(|i| vec![ip(i), ip(i + 100_000)]).collect();
            let text = render(
                keys.iter()
                    .map(String::as_str)
                    .zip(ips.iter().map(Vec::as_slice)),
            );
            std::fs::write(&path, text).unwrap();
            for (k, want) in keys.iter().zip(&ips) {
                assert_eq!(lookup(&path, k).unwrap().as_ref(), Some(want), "n={n} {k}");
            }
            for absent in ["", "0", "a", "c1@eth", "c1@net10", "old", "zzzz", "~"] {
                if !keys.iter().any(|k| k == absent) {
                    assert_eq!(lookup(&path, absent).unwrap(), None, "n={n} {absent}");
                }
            }
        }
    }

    #[test]
    fn refuses_files_without_header() {
        let dir = cni_testkit::temp_dir("rhl-snap");
        let path = dir.join("snap");
        std::fs::write(&path, "a@eth0 10.0.0.1\n").unwrap();
        assert_eq!(
            lookup(&path, "a@eth0").unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        assert_eq!(
            lookup(&dir.join("none"), "a").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
