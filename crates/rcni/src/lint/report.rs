//! What lint found, and how it is printed.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The runtime or a plugin would refuse the config, or it would break the node.
    Error,
    /// Works, but probably not as meant (a key nobody reads, a version some runtimes refuse).
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding: where in the file (a JSON path such as `plugins[1].ipam.ranges[0][0].subnet`,
/// empty for the file as a whole; a line and column for JSON syntax) and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

impl Finding {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            path: path.into(),
            line_col: None,
            message: message.into(),
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(path, message)
        }
    }
}

/// The findings of one file, in the order found, and what it holds when it could be read.
#[derive(Debug, Default)]
pub struct FileReport {
    pub file: String,
    pub findings: Vec<Finding>,
    /// "network rcni, cniVersion 1.0.0, 3 plugins", when the file is a network config.
    pub summary: Option<String>,
}

impl FileReport {
    pub fn new(file: &str) -> FileReport {
        FileReport {
            file: file.to_string(),
            ..FileReport::default()
        }
    }

    pub fn push(&mut self, f: Finding) {
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// Lines for the operator: one per finding, `FILE[:LINE:COL]: SEVERITY: PATH: MESSAGE`,
    /// errors first; an `ok` line when nothing is wrong.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut findings: Vec<&Finding> = self.findings.iter().collect();
        findings.sort_by_key(|f| f.severity);
        for f in findings {
            let at = match f.line_col {
                Some((l, c)) => format!("{}:{l}:{c}", self.file),
                None => self.file.clone(),
            };
            let path = if f.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", f.path)
            };
            out += &format!("{at}: {}: {path}{}\n", f.severity, f.message);
        }
        if self.count(Severity::Error) == 0 {
            let what = self.summary.as_deref().unwrap_or("checked");
            out += &format!("{}: ok: {what}\n", self.file);
        }
        out
    }
}

/// "1 error, 2 warnings in 3 files".
pub fn totals(reports: &[FileReport]) -> String {
    let errors: usize = reports.iter().map(|r| r.count(Severity::Error)).sum();
    let warnings: usize = reports.iter().map(|r| r.count(Severity::Warning)).sum();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {} in {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(reports.len(), "file")
    )
}
