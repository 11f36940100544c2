//! Spec versions and which verbs each of them has.

use std::fmt;

use crate::error::{CniError, Result};

/// A CNI specification version this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version we accept, oldest first: the `supportedVersions` of VERSION.
pub const SUPPORTED_VERSIONS: [SpecVersion; 7] = [
    SpecVersion::V0_1_0,
    SpecVersion::V0_2_0,
    SpecVersion::V0_3_0,
    SpecVersion::V0_3_1,
    SpecVersion::V0_4_0,
    SpecVersion::V1_0_0,
    SpecVersion::V1_1_0,
];

impl SpecVersion {
    pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

    /// The version an error is written in when no config could be read.
    pub const FALLBACK: SpecVersion = SpecVersion::LATEST;

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_1_0 => "0.1.0",
            SpecVersion::V0_2_0 => "0.2.0",
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string; an empty one means 0.1.0, as libcni and the upstream skel do
    /// for configs that predate the `cniVersion` key.
    pub fn parse(s: &str) -> Result<SpecVersion> {
        let v = match s {
            "" | "0.1.0" => SpecVersion::V0_1_0,
            "0.2.0" => SpecVersion::V0_2_0,
            "0.3.0" => SpecVersion::V0_3_0,
            "0.3.1" => SpecVersion::V0_3_1,
            "0.4.0" => SpecVersion::V0_4_0,
            "1.0.0" => SpecVersion::V1_0_0,
            "1.1.0" => SpecVersion::V1_1_0,
            other => {
                return Err(CniError::new(
                    crate::error::INCOMPATIBLE_CNI_VERSION,
                    format!(
                        "incompatible CNI versions: config has cniVersion {other:?}, plugin supports {}",
                        supported_list()
                    ),
                ))
            }
        };
        Ok(v)
    }

    /// Results before 0.3.0 have the `ip4`/`ip6` shape.
    pub fn is_legacy(self) -> bool {
        self <= SpecVersion::V0_2_0
    }

    /// 0.3.0 to 0.4.0 results carry `ips[].version`.
    pub fn has_ip_version_field(self) -> bool {
        (SpecVersion::V0_3_0..=SpecVersion::V0_4_0).contains(&self)
    }

    pub fn supports(self, verb: Verb) -> bool {
        match verb {
            Verb::Add | Verb::Del | Verb::Version => true,
            Verb::Check => self >= SpecVersion::V0_4_0,
            Verb::Gc | Verb::Status => self >= SpecVersion::V1_1_0,
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "0.1.0, 0.2.0, ..., 1.1.0", for messages.
pub fn supported_list() -> String {
    SUPPORTED_VERSIONS
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CNI_COMMAND verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Verb {
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "VERSION" => Verb::Version,
            "GC" => Verb::Gc,
            "STATUS" => Verb::Status,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Version => "VERSION",
            Verb::Gc => "GC",
            Verb::Status => "STATUS",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_version_and_round_trips() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(SpecVersion::parse(v.as_str()).unwrap(), v);
        }
        assert_eq!(SpecVersion::parse("").unwrap(), SpecVersion::V0_1_0);
    }

    #[test]
    fn unknown_version_is_code_1_and_lists_supported() {
        let e = SpecVersion::parse("0.5.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.msg.contains("0.5.0") && e.msg.contains("1.1.0"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn verbs_by_version() {
        assert!(!SpecVersion::V0_3_1.supports(Verb::Check));
        assert!(SpecVersion::V0_4_0.supports(Verb::Check));
        assert!(!SpecVersion::V1_0_0.supports(Verb::Gc));
        assert!(!SpecVersion::V1_0_0.supports(Verb::Status));
        assert!(SpecVersion::V1_1_0.supports(Verb::Gc));
        assert!(SpecVersion::V0_1_0.supports(Verb::Del));
    }

    #[test]
    fn ip_version_field_only_in_03_to_04() {
        assert!(!SpecVersion::V0_2_0.has_ip_version_field());
        assert!(SpecVersion::V0_3_0.has_ip_version_field());
        assert!(SpecVersion::V0_4_0.has_ip_version_field());
        assert!(!SpecVersion::V1_0_0.has_ip_version_field());
    }
}
