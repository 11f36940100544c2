//! CNI_ARGS: `K=V;K2=V2`, as the runtime sets it (kubelet adds `IgnoreUnknown=1`).

use crate::error::{CniError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut pairs = Vec::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                    pairs.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return Err(CniError::invalid_env(format!(
                        "CNI_ARGS has an invalid pair {pair:?}: expected KEY=VALUE pairs separated by ';'"
                    )))
                }
            }
        }
        Ok(CniArgs { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `IgnoreUnknown` set to a true value, as libcni's LoadArgs reads it.
    pub fn ignore_unknown(&self) -> bool {
        matches!(
            self.get("IgnoreUnknown"),
            Some("1" | "t" | "T" | "true" | "True" | "TRUE")
        )
    }

    /// Refuses keys this plugin does not know unless `IgnoreUnknown` is set, as upstream does.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown() {
            return Ok(());
        }
        let standard = [
            "IgnoreUnknown",
            "K8S_POD_NAMESPACE",
            "K8S_POD_NAME",
            "K8S_POD_INFRA_CONTAINER_ID",
            "K8S_POD_UID",
        ];
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()) && !standard.contains(&k.as_str()))
        {
            Some((k, _)) => Err(CniError::invalid_env(format!(
                "CNI_ARGS has unknown key {k:?}: this plugin understands {known:?}; add IgnoreUnknown=1 to pass others"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.1.0.9,10.1.0.10",
        )
        .unwrap();
        assert!(a.ignore_unknown());
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("IP"), Some("10.1.0.9,10.1.0.10"));
        assert_eq!(a.get("MAC"), None);
        assert!(a.check_known(&[]).is_ok());
    }

    #[test]
    fn empty_and_trailing_separator() {
        assert!(CniArgs::parse("").unwrap().is_empty());
        assert_eq!(
            CniArgs::parse("IP=1.2.3.4;").unwrap().get("IP"),
            Some("1.2.3.4")
        );
    }

    #[test]
    fn invalid_pairs_are_code_4_naming_cni_args() {
        for bad in ["IP", "=x", "A=b=c"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_ARGS"), "{}", e.msg);
        }
    }

    #[test]
    fn unknown_keys_refused_without_ignore_unknown() {
        let a = CniArgs::parse("FOO=bar").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert!(e.msg.contains("FOO"));
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=true")
            .unwrap()
            .check_known(&["IP"])
            .is_ok());
        assert!(CniArgs::parse("IP=1.2.3.4;K8S_POD_NAME=x")
            .unwrap()
            .check_known(&["IP"])
            .is_ok());
    }
}
