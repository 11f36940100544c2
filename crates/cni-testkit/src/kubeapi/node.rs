//! The Node objects the fake API server serves, shaped like what a kubelet writes.

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A node as a test describes it: the fields a CNI node agent reads.
///
/// Everything else of a real Node (labels, kubelet conditions, capacity, images, ...) is derived
/// from the name, so that what the server serves costs what a real node costs to move and parse;
/// [`FakeNode::lean`] drops that bulk.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeNode {
    /// `metadata.name` (and the `kubernetes.io/hostname` label and the Hostname address).
    pub name: String,
    /// `spec.podCIDRs`; the first is also `spec.podCIDR`. Empty: neither field is present.
    pub pod_cidrs: Vec<String>,
    /// `status.addresses` of type InternalIP, in order (a Hostname entry follows them).
    pub internal_ips: Vec<String>,
    /// Whether the object carries the kubelet's bulk (conditions, capacity, nodeInfo, images,
    /// annotations, managedFields): about 5 KB of JSON per node instead of about 0.6 KB.
    pub bulk: bool,
}

/// What the server assigns to one incarnation of a node: its uid and creation time.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub uid: String,
    pub created: String,
}

impl Identity {
    /// The identity [`FakeNode::to_json`] uses: derived from the name alone.
    fn derived(name: &str) -> Identity {
        Identity {
            uid: uuid(name),
            created: "2024-01-01T00:00:00Z".to_string(),
        }
    }

    /// A fresh identity for a node created now at `resource_version` (a node deleted and
    /// created again gets a new uid, as on a real cluster).
    pub fn fresh(name: &str, resource_version: u64) -> Identity {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Identity {
            uid: uuid(&format!("{name}/{resource_version}")),
            created: rfc3339(now),
        }
    }
}

impl FakeNode {
    /// A node with realistic bulk (`bulk: true`).
    pub fn new(name: &str, pod_cidrs: &[&str], internal_ips: &[&str]) -> FakeNode {
        FakeNode {
            name: name.to_string(),
            pod_cidrs: pod_cidrs.iter().map(|s| s.to_string()).collect(),
            internal_ips: internal_ips.iter().map(|s| s.to_string()).collect(),
            bulk: true,
        }
    }

    /// The same node without the kubelet's bulk: metadata, labels, spec and addresses only.
    pub fn lean(mut self) -> FakeNode {
        self.bulk = false;
        self
    }

    /// The full Node object (`kind`, `apiVersion` and all) at `resource_version`, with a uid
    /// derived from the name and a fixed creation time. The server serves the same object but
    /// with the uid and creation time of the node's incarnation (see [`crate::FakeApi`]).
    pub fn to_json(&self, resource_version: u64) -> Value {
        let body = self.object(resource_version, &Identity::derived(&self.name));
        with_type_meta(body)
    }

    /// The object without `kind` and `apiVersion`, as items of a list carry it.
    pub(super) fn object(&self, resource_version: u64, id: &Identity) -> Value {
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(self.name));
        metadata.insert("uid".into(), json!(id.uid));
        metadata.insert(
            "resourceVersion".into(),
            json!(resource_version.to_string()),
        );
        metadata.insert("creationTimestamp".into(), json!(id.created));
        let labels: Map<String, Value> = node_labels(&self.name)
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        metadata.insert("labels".into(), Value::Object(labels));
        if self.bulk {
            metadata.insert("annotations".into(), annotations());
            metadata.insert("managedFields".into(), managed_fields(&id.created));
        }
        let mut spec = Map::new();
        if let Some(first) = self.pod_cidrs.first() {
            spec.insert("podCIDR".into(), json!(first));
            spec.insert("podCIDRs".into(), json!(self.pod_cidrs));
        }
        let mut status = Map::new();
        if self.bulk {
            bulk_status(&mut status, &self.name, &id.created);
        }
        status.insert("addresses".into(), self.addresses());
        if self.bulk {
            status.insert("daemonEndpoints".into(), kubelet_endpoint());
            status.insert("nodeInfo".into(), node_info(&self.name));
            status.insert("images".into(), images());
        }
        json!({ "metadata": metadata, "spec": spec, "status": status })
    }

    fn addresses(&self) -> Value {
        let mut addresses: Vec<Value> = self
            .internal_ips
            .iter()
            .map(|ip| json!({ "type": "InternalIP", "address": ip }))
            .collect();
        addresses.push(json!({ "type": "Hostname", "address": self.name }));
        Value::Array(addresses)
    }
}

/// `{"kind":"Node","apiVersion":"v1", ...body}`, in that order.
fn with_type_meta(body: Value) -> Value {
    let mut object = Map::new();
    object.insert("kind".into(), json!("Node"));
    object.insert("apiVersion".into(), json!("v1"));
    if let Value::Object(fields) = body {
        object.extend(fields);
    }
    Value::Object(object)
}

/// The labels a kubelet puts on a Linux node (they depend on the name only, which lets label
/// selectors be matched without the object).
pub(super) fn node_labels(name: &str) -> [(&'static str, String); 5] {
    [
        ("beta.kubernetes.io/arch", "amd64".to_string()),
        ("beta.kubernetes.io/os", "linux".to_string()),
        ("kubernetes.io/arch", "amd64".to_string()),
        ("kubernetes.io/hostname", name.to_string()),
        ("kubernetes.io/os", "linux".to_string()),
    ]
}

fn annotations() -> Value {
    json!({
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    })
}

/// `{".":{},"f:a":{},"f:b":{}}`: a managedFields set of leaf fields.
fn fields(keys: &[&str]) -> Value {
    let mut set = Map::new();
    set.insert(".".into(), json!({}));
    for key in keys {
        set.insert(format!("f:{key}"), json!({}));
    }
    Value::Object(set)
}

fn managed_fields(time: &str) -> Value {
    let labels: Vec<&str> = node_labels("").iter().map(|(k, _)| *k).collect();
    let conditions: Map<String, Value> = ["DiskPressure", "MemoryPressure", "PIDPressure", "Ready"]
        .iter()
        .map(|t| {
            let leaves = [
                "lastHeartbeatTime",
                "lastTransitionTime",
                "message",
                "reason",
                "status",
            ];
            (format!("k:{{\"type\":\"{t}\"}}"), fields(&leaves))
        })
        .collect();
    json!([
        { "manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time,
          "fieldsType": "FieldsV1",
          "fieldsV1": { "f:metadata": {
              "f:annotations": fields(&["node.alpha.kubernetes.io/ttl",
                  "volumes.kubernetes.io/controller-managed-attach-detach"]),
              "f:labels": fields(&labels) } } },
        { "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
          "time": time, "fieldsType": "FieldsV1",
          "fieldsV1": { "f:spec": { "f:podCIDR": {}, "f:podCIDRs": { ".": {}, "v:\"0\"": {} } } } },
        { "manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time,
          "fieldsType": "FieldsV1", "subresource": "status",
          "fieldsV1": { "f:status": { "f:conditions": Value::Object(conditions),
              "f:images": {}, "f:nodeInfo": { "f:bootID": {} } } } }
    ])
}

/// capacity, allocatable and conditions, as a healthy kubelet reports them.
fn bulk_status(status: &mut Map<String, Value>, name: &str, time: &str) {
    let memory_ki = 16_000_000 + (hash64(name, 1) % 400_000);
    status.insert(
        "capacity".into(),
        json!({ "cpu": "4", "ephemeral-storage": "102685624Ki", "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": format!("{memory_ki}Ki"), "pods": "110" }),
    );
    status.insert(
        "allocatable".into(),
        json!({ "cpu": "4", "ephemeral-storage": "94634127204", "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": format!("{}Ki", memory_ki - 102_400),
                "pods": "110" }),
    );
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({ "type": kind, "status": status, "lastHeartbeatTime": time,
                "lastTransitionTime": time, "reason": reason, "message": message })
    };
    status.insert(
        "conditions".into(),
        json!([
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available"
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure"
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available"
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status"
            )
        ]),
    );
}

fn kubelet_endpoint() -> Value {
    json!({ "kubeletEndpoint": { "Port": 10250 } })
}

fn node_info(name: &str) -> Value {
    json!({
        "architecture": "amd64",
        "bootID": uuid(&format!("{name}/boot")),
        "containerRuntimeVersion": "containerd://1.7.24",
        "kernelVersion": "6.1.0-28-amd64",
        "kubeProxyVersion": "v1.31.4",
        "kubeletVersion": "v1.31.4",
        "machineID": format!("{:016x}{:016x}", hash64(name, 2), hash64(name, 3)),
        "operatingSystem": "linux",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "systemUUID": uuid(&format!("{name}/system")),
    })
}

/// The images a typical worker has pulled: the same on every node, as in a real cluster.
fn images() -> Value {
    const IMAGES: [(&str, &str, u64); 10] = [
        ("registry.k8s.io/kube-proxy", "v1.31.4", 30_229_616),
        ("registry.k8s.io/coredns/coredns", "v1.11.3", 18_562_039),
        ("registry.k8s.io/pause", "3.10", 320_368),
        ("docker.io/library/nginx", "1.27.3", 72_955_450),
        ("docker.io/library/busybox", "1.37.0", 2_166_802),
        (
            "registry.k8s.io/metrics-server/metrics-server",
            "v0.7.2",
            19_494_617,
        ),
        ("quay.io/prometheus/node-exporter", "v1.8.2", 12_091_325),
        ("cr.fluentbit.io/fluent/fluent-bit", "3.2.2", 37_803_152),
        (
            "registry.k8s.io/sig-storage/csi-node-driver-registrar",
            "v2.12.0",
            14_019_408,
        ),
        (
            "registry.k8s.io/sig-storage/livenessprobe",
            "v2.14.0",
            13_457_310,
        ),
    ];
    let list: Vec<Value> = IMAGES
        .iter()
        .map(|(repo, tag, size)| {
            let digest: String = (0..4)
                .map(|i| format!("{:016x}", hash64(repo, i)))
                .collect();
            json!({ "names": [format!("{repo}@sha256:{digest}"), format!("{repo}:{tag}")],
                    "sizeBytes": size })
        })
        .collect();
    Value::Array(list)
}

/// FNV-1a of `seed` and `salt`: stable across runs, unlike std's randomly keyed hasher.
fn hash64(seed: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV mixes its last bytes poorly: finish like splitmix64.
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 29)
}

/// A version-4-shaped UUID derived from `seed`.
fn uuid(seed: &str) -> String {
    let (a, b) = (hash64(seed, 10), hash64(seed, 11));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// `secs` since the epoch as RFC 3339 UTC (`2024-01-01T00:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeapi_node_time_uuid_and_size() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 86_399), "2000-02-29T23:59:59Z");
        let u = uuid("node-1");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid("node-2"));
        let node = FakeNode::new(
            "node-0001",
            &["10.244.1.0/24", "fd00:1::/64"],
            &["10.0.0.1"],
        );
        let full = node.to_json(7);
        assert_eq!(full["kind"], "Node");
        assert_eq!(full["metadata"]["resourceVersion"], "7");
        assert_eq!(full["spec"]["podCIDR"], "10.244.1.0/24");
        assert_eq!(full["status"]["images"].as_array().unwrap().len(), 10);
        let bulky = serde_json::to_vec(&full).unwrap().len();
        assert!(
            (4_000..=6_500).contains(&bulky),
            "bulky node is {bulky} bytes"
        );
        let lean = serde_json::to_vec(&node.lean().to_json(7)).unwrap().len();
        assert!(lean < 1_000, "lean node is {lean} bytes");
    }
}
