//! A --plugin-config file through parsing, validation and the limits it
//! produces: errors, never a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = etcd_inspector::runtime::settings::SettingsFile::parse(text) {
        let defaults = etcd_inspector::runtime::CallLimits::default();
        for name in file.plugins.keys() {
            let settings = file.for_plugin(name);
            let _ = settings.limits(&defaults);
            let _ = settings.max_consecutive_traps();
        }
    }
});
