//! Per-call diagnostics: one line per call appended to the config's `logFile`, because
//! operators debug CNI by reading such a log. Never writes to stdout.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Info,
    Debug,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" | "warn" | "warning" => Some(Level::Error),
            "info" | "" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }
}

/// Where a plugin's log lines go; a no-op without `logFile`.
#[derive(Debug, Clone, Default)]
pub struct Logger {
    file: Option<PathBuf>,
    level: Option<Level>,
    plugin: &'static str,
}

impl Logger {
    pub fn new(plugin: &'static str, file: Option<PathBuf>, level: Option<&str>) -> Logger {
        let level = file
            .as_ref()
            .map(|_| level.and_then(Level::parse).unwrap_or(Level::Info));
        Logger {
            file,
            level,
            plugin,
        }
    }

    pub fn enabled(&self, level: Level) -> bool {
        self.level.is_some_and(|l| level <= l)
    }

    /// Appends one line. A single write on an O_APPEND file keeps lines from concurrent plugin
    /// processes whole. Logging problems never fail the call.
    pub fn line(&self, level: Level, fields: &str) {
        if !self.enabled(level) {
            return;
        }
        let Some(path) = &self.file else { return };
        let text = format!(
            "{} {} {} pid={} {}\n",
            timestamp(SystemTime::now()),
            match level {
                Level::Error => "ERROR",
                Level::Info => "INFO",
                Level::Debug => "DEBUG",
            },
            self.plugin,
            std::process::id(),
            fields
        );
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(text.as_bytes());
        }
    }

    pub fn debug(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Debug) {
            self.line(Level::Debug, &format!("msg={}", quote(msg.as_ref())));
        }
    }
}

/// A logfmt value: bare when safe, quoted otherwise.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=')
    {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

/// RFC 3339 UTC with milliseconds, without pulling in a date crate.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_341_600_123); // 2026-11-22T10:00:00.123Z
        assert_eq!(timestamp(t), "2026-11-22T10:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn levels_filter_and_lines_append() {
        let dir = std::env::temp_dir().join(format!("cni-log-test-{}", std::process::id()));
        let file = dir.join("sub/plugin.log");
        let l = Logger::new("rtest", Some(file.clone()), Some("error"));
        l.line(Level::Info, "skipped=1");
        l.line(Level::Error, "kept=1");
        let l = Logger::new("rtest", Some(file.clone()), None);
        l.debug("not at info");
        l.line(Level::Info, "kept=2");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("ERROR rtest") && lines[0].ends_with("kept=1"));
        assert!(lines[1].contains("INFO rtest") && lines[1].ends_with("kept=2"));
        assert!(Logger::new("x", None, Some("debug")).level.is_none());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("eth0"), "eth0");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
