//! Manifest text (EtcdCluster/EtcdInspection YAML, any annotations) through
//! parsing and validation: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = std::env::temp_dir();
    let set = etcd_inspector::cluster::manifests::read_str(text, "fuzz.yaml", &dir);
    for config in set.clusters {
        // What the supervisor does with a good one: connections are prepared
        // (nothing is dialled).
        let _ = config.connect(Default::default());
    }
    let _ = etcd_inspector::cluster::parse_feature_gates(text);
});
