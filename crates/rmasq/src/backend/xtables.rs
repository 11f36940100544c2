//! The `iptables` and `ip6tables` tools as the iptables backend and the forward accepts (of either
//! backend) use them: what is there is read with one `iptables-save`, and every change of a call
//! is written with one `iptables-restore --noflush --wait`, atomically per table and queued on
//! the xtables lock as `iptables --wait` is. A class's first pod and last pod thus cost two
//! processes per family instead of one per rule (18 to create a class, 8 more to remove it).
//!
//! Not the `iptables` crate: it runs one process per rule and splits rules with a regex engine,
//! which alone was a tenth of every plugin binary that links rmasq. Our rules hold no quoted or
//! spaced words, so the tools' text is compared as words. `-w` of
//! `iptables-restore` exists since iptables 1.6.2 (2017).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE};

use crate::class::Class;

/// The command of a family.
pub(crate) fn cmd(v4: bool) -> &'static str {
    if v4 {
        "iptables"
    } else {
        "ip6tables"
    }
}

/// The rules of some tables of one family, as `iptables-save` printed them.
pub(crate) struct Saved {
    /// (table, line) for every chain (`:NAME ...`) and rule (`-A CHAIN ...`) line.
    lines: Vec<(String, String)>,
}

impl Saved {
    /// Reads `tables` of the family `v4` with one `iptables-save` (all tables when more than
    /// one is asked for). A table that is not loaded yet reads as empty.
    pub(crate) fn read(v4: bool, tables: &[&str]) -> Result<Saved> {
        let save = format!("{}-save", cmd(v4));
        let mut command = Command::new(&save);
        if let [table] = tables {
            command.args(["-t", table]);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run {save}"), e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                save,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(Saved::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// What `iptables-save` prints where nothing is there.
    pub(crate) fn empty() -> Saved {
        Saved { lines: Vec::new() }
    }

    fn parse(text: &str) -> Saved {
        let mut table = String::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if line.starts_with(':') || line.starts_with("-A ") {
                // Comments come quoted ("rmasq:x"); ours hold no spaces, so unquoting is exact.
                lines.push((table.clone(), line.replace('"', "")));
            }
        }
        Saved { lines }
    }

    pub(crate) fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.lines.iter().any(|(t, l)| {
            t == table && l.strip_prefix(':').and_then(|l| l.split(' ').next()) == Some(chain)
        })
    }

    /// The rules of `chain`, each without its `-A CHAIN `, in order.
    pub(crate) fn rules<'a>(
        &'a self,
        table: &'a str,
        chain: &str,
    ) -> impl Iterator<Item = &'a str> {
        let prefix = format!("-A {chain} ");
        self.lines
            .iter()
            .filter(move |(t, _)| t == table)
            .filter_map(move |(_, l)| l.strip_prefix(prefix.as_str()))
    }

    pub(crate) fn has_rule(&self, table: &str, chain: &str, rule: &str) -> bool {
        self.rules(table, chain).any(|r| same_words(r, rule))
    }
}

/// Whether two rules are the same words.
pub(crate) fn same_words(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Changes for one `iptables-restore --noflush`: chain declarations and rule commands, by table.
#[derive(Default)]
pub(crate) struct Batch {
    tables: Vec<(&'static str, Vec<String>)>,
}

impl Batch {
    /// Adds a line (`:CHAIN - [0:0]`, `-A ...`, `-I ...`, `-D ...`, `-F ...`, `-X ...`) to
    /// `table`. A declared chain is created, or flushed if it exists.
    pub(crate) fn push(&mut self, table: &'static str, line: String) {
        match self.tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, lines)) => lines.push(line),
            None => self.tables.push((table, vec![line])),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for (table, lines) in &self.tables {
            text.push_str(&format!("*{table}\n"));
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            text.push_str("COMMIT\n");
        }
        text
    }

    /// Writes the batch, if any, with one `iptables-restore --noflush --wait` of family `v4`.
    pub(crate) fn apply(&self, v4: bool) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let restore = format!("{}-restore", cmd(v4));
        let text = self.text();
        let cannot = |e: std::io::Error| fail(format!("cannot run {restore}"), e.to_string());
        let mut child = Command::new(&restore)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(cannot)?;
        // The tool reads all of its input before acting; a write error shows up as its failure.
        let _ = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
        let out = child.wait_with_output().map_err(cannot)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(fail(format!("{restore} --noflush"), err).with_details(text));
        }
        Ok(())
    }
}

fn fail(what: String, err: String) -> CniError {
    CniError::new(FIREWALL_FAILURE, format!("{what}: {}", err.trim()))
}

/// The CHECK error (code 102) for a rule of `c` that is not there.
pub(crate) fn missing(c: &Class, table: &str, chain: &str, rule: &str) -> CniError {
    CniError::new(
        CHECK_MISMATCH,
        format!(
            "{} rule missing: -t {table} -A {chain} {rule} (network {}): run DEL and ADD again",
            cmd(c.is_v4()),
            c.network
        ),
    )
}

/// The iptables-legacy tables of family `v4` loaded in the calling thread's netns, one name per
/// line: rules there are in x_tables, which only the legacy tools (and `IPT_SO_GET_INFO`) see.
pub(crate) fn legacy_tables(v4: bool) -> String {
    let names = if v4 {
        "/proc/thread-self/net/ip_tables_names"
    } else {
        "/proc/thread-self/net/ip6_tables_names"
    };
    std::fs::read_to_string(names).unwrap_or_default()
}

/// True if `program` is an executable file on PATH (or a path to one).
pub(crate) fn in_path(program: &str) -> bool {
    find_in_path(program).is_some()
}

/// Where `program` (a name looked up on PATH, or a path) is as an executable file.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return is_exec(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests;
