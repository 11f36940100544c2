//! Driving a conflist the way libcni does: one plugin process per call, each plugin getting the
//! list's `name` and `cniVersion`, ADD threading each result into the next plugin's
//! `prevResult`, CHECK in order and DEL in reverse with the final result, and `runtimeConfig`
//! restricted to the capabilities each plugin declares.

use std::fmt;
use std::path::PathBuf;

use cni_types::{NetConfList, SpecVersion};
use serde_json::{Map, Value};

use crate::fs::{bin_dir, cni_path_with_upstream, upstream_dir};
use crate::netns::Netns;
use crate::plugin::{run_plugin, Invocation, PluginRun};

/// Parses a conflist written as JSON; panics saying what is wrong with it.
pub fn conflist(list: &Value) -> NetConfList {
    NetConfList::from_slice(list.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("invalid conflist: {e}\nconflist: {list}"))
}

/// The config plugin `index` of `list` receives on stdin, built as libcni's `buildOneConfig`
/// builds it: the plugin's own keys, the list's `name` and `cniVersion` (the highest supported of
/// `cniVersions` if given), `prevResult` when there is one, and `runtimeConfig` holding the
/// `capability_args` the plugin declares in `capabilities` (only when at least one matches; a
/// plugin declaring none keeps its own keys untouched). Panics if there is no such plugin or the
/// version is unknown.
pub fn plugin_config(
    list: &NetConfList,
    index: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut conf = list
        .plugin_config(index)
        .unwrap_or_else(|e| panic!("cannot build the config of plugin #{index}: {e}"));
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    let runtime: Map<String, Value> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), capability_args.get(k)?.clone())))
                .collect()
        })
        .unwrap_or_default();
    if !runtime.is_empty() {
        conf["runtimeConfig"] = Value::Object(runtime);
    }
    conf
}

/// The first file named `plugin_type` in the directories of `cni_path` (a `CNI_PATH`), as
/// libcni's `FindInPath` looks plugins up (our plugins' own lookup for delegation).
pub fn find_plugin(cni_path: &str, plugin_type: &str) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = std::env::split_paths(cni_path).collect();
    cni_plugin::delegate::find_plugin(plugin_type, &dirs).ok()
}

/// The binary for a plugin `type`: ours if built, else upstream's (the lookup a chain does with
/// [`cni_path_with_upstream`]). Panics saying what to build or install when neither exists.
pub fn binary(plugin_type: &str) -> PathBuf {
    find_plugin(&cni_path_with_upstream(), plugin_type).unwrap_or_else(|| not_found(plugin_type))
}

fn not_found(plugin_type: &str) -> ! {
    panic!(
        "plugin {plugin_type} is neither ours in {} nor upstream's in {}: run `cargo build \
         --workspace --bins` first, or apt-get install containernetworking-plugins (scripts/test \
         does both)",
        bin_dir().display(),
        upstream_dir().display()
    )
}

/// One plugin process of a chain: which plugin, what it got and what it did.
#[derive(Debug, Clone)]
pub struct PluginCall {
    /// `ADD`, `CHECK` or `DEL`.
    pub verb: String,
    /// Position of the plugin in the list.
    pub index: usize,
    pub plugin_type: String,
    /// The config it received on stdin.
    pub config: Value,
    pub run: PluginRun,
}

impl fmt::Display for PluginCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of plugin #{} ({}) {}\nexit code: {}\nstdout: {}\nstderr: {}\nconfig: {}",
            self.verb,
            self.index,
            self.plugin_type,
            if self.run.code == 0 {
                "succeeded"
            } else {
                "failed"
            },
            self.run.code,
            self.run.stdout,
            self.run.stderr,
            self.config
        )
    }
}

/// A conflist attached to one container interface, driven as libcni drives it.
///
/// Plugins run inside `node` (playing the host), one process each, with `CNI_PATH` searched for
/// their binaries and handed to them: by default ours first, then upstream's
/// ([`cni_path_with_upstream`]), so a chain may mix both. Capability args (libcni's
/// `CapabilityArgs`) reach each plugin as `runtimeConfig`, filtered by its `capabilities`.
///
/// Unlike libcni, DEL gets the result at every version (libcni sends no cached result below
/// 0.4.0): tests pass what they want the plugins to see.
pub struct Chain<'a> {
    node: &'a Netns,
    list: NetConfList,
    version: SpecVersion,
    container_id: String,
    netns: String,
    ifname: String,
    capability_args: Map<String, Value>,
    skip_check: Vec<String>,
    cni_path: String,
}

impl<'a> Chain<'a> {
    /// The conflist `list` (JSON, panics if invalid) for interface `ifname` of container
    /// `container_id` whose namespace is `pod`; plugins run in `node`.
    pub fn new(
        node: &'a Netns,
        list: &Value,
        container_id: &str,
        pod: &Netns,
        ifname: &str,
    ) -> Chain<'a> {
        let list = conflist(list);
        let version = list
            .version()
            .unwrap_or_else(|e| panic!("conflist {:?}: {e}", list.name));
        Chain {
            node,
            list,
            version,
            container_id: container_id.to_string(),
            netns: pod.path().display().to_string(),
            ifname: ifname.to_string(),
            capability_args: Map::new(),
            skip_check: Vec::new(),
            cni_path: cni_path_with_upstream(),
        }
    }

    /// The runtime's capability args (a JSON object), e.g. `{"portMappings": [...]}`.
    pub fn capability_args(mut self, args: Value) -> Self {
        match args {
            Value::Object(map) => self.capability_args = map,
            other => panic!("capability args must be a JSON object, not {other}"),
        }
        self
    }

    /// Leaves plugins of this type out of CHECK (for upstream plugins whose CHECK is broken).
    pub fn skip_check(mut self, plugin_type: &str) -> Self {
        self.skip_check.push(plugin_type.to_string());
        self
    }

    /// Sets `CNI_PATH`, where plugin binaries are looked up (first match wins).
    pub fn cni_path(mut self, path: impl Into<String>) -> Self {
        self.cni_path = path.into();
        self
    }

    pub fn list(&self) -> &NetConfList {
        &self.list
    }

    /// The version every plugin gets and must answer in.
    pub fn version(&self) -> SpecVersion {
        self.version
    }

    fn plugin_type(&self, index: usize) -> String {
        match self.list.plugins[index].get("type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => panic!(
                "plugin #{index} of conflist {:?} has no type",
                self.list.name
            ),
        }
    }

    /// Runs `verb` of plugin `index` alone, with `prev` as prevResult; never panics on plugin
    /// failure (see [`PluginCall::run`]).
    pub fn call(&self, verb: &str, index: usize, prev: Option<&Value>) -> PluginCall {
        let plugin_type = self.plugin_type(index);
        let config = plugin_config(&self.list, index, prev, &self.capability_args);
        let bin = find_plugin(&self.cni_path, &plugin_type).unwrap_or_else(|| {
            if self.cni_path == cni_path_with_upstream() {
                not_found(&plugin_type)
            }
            panic!(
                "plugin {plugin_type} not found in CNI_PATH {}",
                self.cni_path
            )
        });
        let inv = Invocation::new(verb, &self.container_id, Some(&self.netns), &self.ifname)
            .with_path(self.cni_path.clone());
        let run = run_plugin(Some(self.node), &bin, &inv, &config.to_string());
        PluginCall {
            verb: verb.to_string(),
            index,
            plugin_type,
            config,
            run,
        }
    }

    /// ADD through the chain: the final result, or the first failed call (later plugins are not
    /// run). Panics if a plugin succeeds without a JSON result or answers in another version.
    pub fn try_add(&self) -> Result<Value, Box<PluginCall>> {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            let call = self.call("ADD", i, prev.as_ref());
            if call.run.code != 0 {
                return Err(Box::new(call));
            }
            let out = match &call.run.json {
                Some(v) => v.clone(),
                None => panic!("plugin printed no JSON result: {call}"),
            };
            assert_eq!(
                out["cniVersion"],
                self.version.as_str(),
                "{} answered in another version: {out}",
                call.plugin_type
            );
            prev = Some(out);
        }
        Ok(prev.expect("a conflist has plugins"))
    }

    /// ADD through the chain; the final result. Panics with the failed call.
    pub fn add(&self) -> Value {
        self.try_add().unwrap_or_else(|call| panic!("{call}"))
    }

    /// CHECK of every plugin (but the skipped types), in order, with `result` as prevResult;
    /// the first failed call. Nothing runs if the list sets `disableCheck`. Panics below 0.4.0,
    /// which has no CHECK (libcni refuses it).
    pub fn check(&self, result: &Value) -> Result<(), Box<PluginCall>> {
        assert!(
            self.version >= SpecVersion::V0_4_0,
            "cniVersion {} has no CHECK",
            self.version
        );
        if self.list.disable_check.is_some_and(|f| f.0) {
            return Ok(());
        }
        for i in 0..self.list.plugins.len() {
            if self.skip_check.contains(&self.plugin_type(i)) {
                continue;
            }
            let call = self.call("CHECK", i, Some(result));
            if call.run.code != 0 {
                return Err(Box::new(call));
            }
        }
        Ok(())
    }

    /// DEL of every plugin in reverse order, with `result` as prevResult; the first failed call
    /// (earlier plugins are not run).
    pub fn try_del(&self, result: &Value) -> Result<(), Box<PluginCall>> {
        for i in (0..self.list.plugins.len()).rev() {
            let call = self.call("DEL", i, Some(result));
            if call.run.code != 0 {
                return Err(Box::new(call));
            }
        }
        Ok(())
    }

    /// DEL through the chain; panics with the failed call.
    pub fn del(&self, result: &Value) {
        self.try_del(result).unwrap_or_else(|call| panic!("{call}"))
    }
}

#[cfg(test)]
mod tests {
    //! Config building and plugin lookup: no namespace, no root.

    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::*;
    use crate::temp_dir;

    fn list(v: Value) -> NetConfList {
        conflist(&v)
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn name_and_version_of_the_list_override_the_plugin() {
        let l = list(json!({
            "cniVersion": "0.4.0", "name": "pods",
            "plugins": [
                {"type": "rbridge", "bridge": "cni0", "name": "other", "cniVersion": "1.1.0",
                 "ipam": {"type": "rhost-local"}},
                {"type": "rroutes"}
            ]
        }));
        let c = plugin_config(&l, 0, None, &Map::new());
        assert_eq!(
            c,
            json!({"type": "rbridge", "bridge": "cni0", "name": "pods", "cniVersion": "0.4.0",
                   "ipam": {"type": "rhost-local"}})
        );
        let c = plugin_config(&l, 1, None, &Map::new());
        assert_eq!(
            c,
            json!({"type": "rroutes", "name": "pods", "cniVersion": "0.4.0"})
        );
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let l = list(json!({
            "cniVersion": "0.3.1", "cniVersions": ["0.4.0", "1.1.0", "9.9.9"], "name": "n",
            "plugins": [{"type": "rmasq"}]
        }));
        assert_eq!(
            plugin_config(&l, 0, None, &Map::new())["cniVersion"],
            "1.1.0"
        );
    }

    #[test]
    fn prev_result_is_injected_when_given_and_replaces_the_plugins_own() {
        let l = list(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "rroutes", "prevResult": {"stale": true}}]
        }));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&l, 0, Some(&prev), &Map::new());
        assert_eq!(c["prevResult"], prev);
        // Without a previous result the plugin's keys are left as written.
        let c = plugin_config(&l, 0, None, &Map::new());
        assert_eq!(c["prevResult"], json!({"stale": true}));
    }

    #[test]
    fn runtime_config_holds_only_declared_capabilities() {
        let l = list(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [
                {"type": "portmap",
                 "capabilities": {"portMappings": true, "bandwidth": false, "ips": true},
                 "runtimeConfig": {"mine": 1}},
                {"type": "rmasq"},
                {"type": "tuning", "capabilities": {"mac": true}, "runtimeConfig": {"mine": 2}}
            ]
        }));
        let rt = args(json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1},
            "mac": null,
            "other": 1
        }));
        // Declared and offered: injected, replacing the plugin's own runtimeConfig; declared
        // false or not offered: left out.
        let c = plugin_config(&l, 0, None, &rt);
        assert_eq!(
            c["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert_eq!(
            c["capabilities"],
            json!({"portMappings": true, "bandwidth": false, "ips": true})
        );
        // No capabilities: no runtimeConfig, whatever the runtime offers.
        let c = plugin_config(&l, 1, None, &rt);
        assert!(c.get("runtimeConfig").is_none(), "{c}");
        // A null arg is still an arg, as in libcni.
        assert_eq!(
            plugin_config(&l, 2, None, &rt)["runtimeConfig"],
            json!({"mac": null})
        );
        // Nothing matches: no runtimeConfig injected, the plugin's own stays.
        let c = plugin_config(&l, 0, None, &args(json!({"other": 1})));
        assert_eq!(c["runtimeConfig"], json!({"mine": 1}));
        let c = plugin_config(&l, 2, None, &Map::new());
        assert_eq!(c["runtimeConfig"], json!({"mine": 2}));
    }

    #[test]
    fn plugin_config_keeps_every_other_key_in_order() {
        let l = list(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "rmasq", "z": 1, "a": {"b": [1, 2]}, "m": "x"}]
        }));
        let prev = json!({"cniVersion": "1.0.0"});
        let c = plugin_config(&l, 0, Some(&prev), &Map::new());
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["type", "z", "a", "m", "name", "cniVersion", "prevResult"]
        );
        assert_eq!(c["a"], json!({"b": [1, 2]}));
    }

    #[test]
    #[should_panic(expected = "has no plugin #1")]
    fn plugin_config_panics_past_the_end() {
        let l = list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "x"}]}));
        plugin_config(&l, 1, None, &Map::new());
    }

    #[test]
    #[should_panic(expected = "invalid conflist")]
    fn conflist_panics_without_plugins() {
        conflist(&json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}));
    }

    #[test]
    fn find_plugin_takes_the_first_directory_holding_a_file() {
        let a = temp_dir("rcni-tk-path");
        let b = temp_dir("rcni-tk-path");
        for (dir, name) in [(&a, "p"), (&b, "p"), (&b, "q")] {
            let path = dir.join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(a.join("q")).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(find_plugin(&path, "p"), Some(a.join("p")));
        // A directory of that name is no plugin.
        assert_eq!(find_plugin(&path, "q"), Some(b.join("q")));
        assert_eq!(find_plugin(&path, "r"), None);
        assert_eq!(find_plugin(&path, "../p"), None);
    }

    #[test]
    #[should_panic(expected = "neither ours")]
    fn binary_panics_when_missing_everywhere() {
        binary("no-such-plugin");
    }
}
