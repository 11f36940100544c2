//! The `iptables` and `ip6tables` commands, run with `--wait` so concurrent callers queue on the
//! xtables lock: what the iptables backend's nat rules and the forward accepts (of either
//! backend) are written, checked and removed with.

use std::path::Path;

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

pub(crate) type CmdResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The `iptables` (or `ip6tables`) command. Written here rather than taken from the `iptables`
/// crate, which splits rules with a regex engine: that alone was a tenth of every plugin that
/// links rmasq, and a plugin's binary is mapped into memory on each of its calls. Our rules hold
/// no quoted or spaced words, so splitting on whitespace is exact. `-C` and `--wait` exist since
/// iptables 1.4.20 (2013); we never use `-L`, the one listing that resolves names.
pub(crate) struct IPTables {
    pub(crate) cmd: &'static str,
}

impl IPTables {
    fn run(&self, table: &str, args: &[&str], rule: &str) -> CmdResult<std::process::Output> {
        Ok(std::process::Command::new(self.cmd)
            .args(["-t", table])
            .args(args)
            .args(rule.split_whitespace())
            .arg("--wait")
            .output()?)
    }

    fn ok(&self, table: &str, args: &[&str], rule: &str) -> CmdResult<()> {
        let out = self.run(table, args, rule)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned().into())
        }
    }

    /// Runs `command` (e.g. `-S CHAIN`) on `table`, whatever its exit.
    pub(crate) fn execute(&self, table: &str, command: &str) -> CmdResult<std::process::Output> {
        self.run(table, &[], command)
    }

    pub(crate) fn exists(&self, table: &str, chain: &str, rule: &str) -> CmdResult<bool> {
        Ok(self.run(table, &["-C", chain], rule)?.status.success())
    }

    pub(crate) fn append(&self, table: &str, chain: &str, rule: &str) -> CmdResult<()> {
        self.ok(table, &["-A", chain], rule)
    }

    pub(crate) fn insert(
        &self,
        table: &str,
        chain: &str,
        rule: &str,
        position: u32,
    ) -> CmdResult<()> {
        self.ok(table, &["-I", chain, &position.to_string()], rule)
    }

    pub(crate) fn delete(&self, table: &str, chain: &str, rule: &str) -> CmdResult<()> {
        self.ok(table, &["-D", chain], rule)
    }

    fn new_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-N", chain], "")
    }

    pub(crate) fn flush_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-F", chain], "")
    }

    pub(crate) fn delete_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-X", chain], "")
    }
}

pub(crate) fn ipt(v4: bool) -> IPTables {
    IPTables { cmd: cmd(v4) }
}

/// The `-S` listing of `chain`, or None if the chain does not exist.
pub(crate) fn list_chain(t: &IPTables, table: &str, chain: &str) -> Result<Option<Vec<String>>> {
    let out = run(t.execute(table, &format!("-S {chain}")), || {
        format!("{} -t {table} -S {chain}", t.cmd)
    })?;
    if !out.status.success() {
        return Ok(None);
    }
    // -S quotes comments ("rmasq:x"); ours hold no spaces, so unquoting is exact.
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.replace('"', ""))
            .collect(),
    ))
}

fn fail(what: String) -> impl FnOnce(Box<dyn std::error::Error>) -> CniError {
    move |e| {
        CniError::new(
            FIREWALL_FAILURE,
            format!("{what}: {}", e.to_string().trim()),
        )
    }
}

/// `r` with its error as a firewall failure (code 105) of the command `what` describes.
pub(crate) fn run<T>(
    r: std::result::Result<T, Box<dyn std::error::Error>>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    r.map_err(|e| fail(what())(e))
}

pub(crate) fn ensure_chain(t: &IPTables, table: &str, chain: &str) -> Result<()> {
    if list_chain(t, table, chain)?.is_none() {
        run(t.new_chain(table, chain), || {
            format!("{} -t {table} -N {chain}", t.cmd)
        })?;
    }
    Ok(())
}

/// True if `chain` holds exactly `rules`, in order.
pub(crate) fn has_exactly(
    t: &IPTables,
    table: &str,
    chain: &str,
    rules: &[String],
) -> Result<bool> {
    let Some(lines) = list_chain(t, table, chain)? else {
        return Ok(false);
    };
    let have: Vec<&String> = lines.iter().filter(|l| l.starts_with("-A ")).collect();
    Ok(have.len() == rules.len()
        && have
            .iter()
            .zip(rules)
            .all(|(h, r)| **h == format!("-A {chain} {r}")))
}

pub(crate) fn append_if_missing(t: &IPTables, table: &str, chain: &str, rule: &str) -> Result<()> {
    let what = || format!("{} -t {table} -A {chain} {rule}", t.cmd);
    if !run(t.exists(table, chain, rule), what)? {
        run(t.append(table, chain, rule), what)?;
    }
    Ok(())
}

pub(crate) fn delete_if_present(t: &IPTables, table: &str, chain: &str, rule: &str) -> Result<()> {
    let what = || format!("{} -t {table} -D {chain} {rule}", t.cmd);
    if run(t.exists(table, chain, rule), what)? {
        run(t.delete(table, chain, rule), what)?;
    }
    Ok(())
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

/// True if `program` is an executable file on PATH (or a path to one).
pub(crate) fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return is_exec(Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| is_exec(&d.join(program)))
}

#[cfg(test)]
mod tests;
