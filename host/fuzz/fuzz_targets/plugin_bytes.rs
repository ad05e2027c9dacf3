//! Bytes offered as a plugin file through the checks, compilation, linking
//! and describe(): a LoadError, never a panic. Starts from the bundled
//! plugins when the corpus directory holds them (`make fuzz` copies them).
#![no_main]

use std::sync::OnceLock;

use etcd_inspector::runtime::{CallLimits, Runtime};
use libfuzzer_sys::fuzz_target;

fn host() -> &'static (tokio::runtime::Runtime, Runtime) {
    static HOST: OnceLock<(tokio::runtime::Runtime, Runtime)> = OnceLock::new();
    HOST.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let runtime = Runtime::new(CallLimits::default()).unwrap();
        (tokio, runtime)
    })
}

fuzz_target!(|data: &[u8]| {
    let (tokio, runtime) = host();
    let _ = tokio.block_on(runtime.load(data.to_vec()));
});
