//! The `etcd-inspector` binary: everything is in the library (`app`).

fn main() -> std::process::ExitCode {
    etcd_inspector::app::main()
}
