//! `vm-guest op CGROUP NAME ARGS...`: the child operation the guest tests (`tests/guest.rs`)
//! act through, [`sensor_vm_tests::op`]: join CGROUP, do one privileged operation, print its
//! report. The tests themselves run as the libtest binary `/bin/vm-tests`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_none_or(|a| a != "op") {
        eprintln!("usage: vm-guest op CGROUP NAME ARGS... (the tests run as /bin/vm-tests)");
        std::process::exit(2);
    }
    std::process::exit(sensor_vm_tests::op(&args[2..]));
}
