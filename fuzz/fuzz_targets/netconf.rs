//! Network configs and conflists as runtimes and our tools read them (the skeleton's shared
//! keys, `rroutes sync`'s conflist, GC's valid attachments and keep-created-after): what parses writes back to JSON
//! that parses the same, and every plugin of a conflist gets a config that parses.
#![no_main]

use cni_types::config::{NetConf, NetConfList};
use cni_types::gc::{keep_created_after, valid_attachments};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = NetConf::from_slice(data) {
        let _ = conf.version();
        let text = serde_json::to_vec(&conf).unwrap();
        let again = NetConf::from_slice(&text).expect("a config we wrote parses");
        assert_eq!(
            rcni_fuzz::no_floats(serde_json::to_value(&again).unwrap()),
            rcni_fuzz::no_floats(serde_json::to_value(&conf).unwrap())
        );
        assert_eq!(again.version().ok(), conf.version().ok());
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = valid_attachments(&v);
        let _ = keep_created_after(&v);
    }
    let Ok(list) = NetConfList::from_slice(data) else {
        return;
    };
    let Ok(version) = list.version() else {
        return;
    };
    for i in 0..list.plugins.len() {
        let conf = list.plugin_config(i).expect("every plugin has a config");
        assert_eq!(conf["cniVersion"], Value::String(version.as_str().into()));
        assert_eq!(conf["name"], Value::String(list.name.clone()));
        // What a runtime hands the plugin is read by the skeleton, or refused as a config.
        if let Err(e) = NetConf::from_slice(&serde_json::to_vec(&conf).unwrap()) {
            assert_eq!(e.code, 7, "{e}");
        }
    }
});
