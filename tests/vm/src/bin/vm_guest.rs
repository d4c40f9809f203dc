//! `vm-guest`: the guest's test driver. Runs every test of `sensor_vm_tests::tests()` and
//! prints libtest-style lines (xtask sums the `test result:` line), exiting 0 only when all
//! passed. `vm-guest op ARGS` runs the child operation `sensor_vm_tests::op(ARGS)` instead.

use std::{process::ExitCode, time::Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "op") {
        let code = sensor_vm_tests::op(&args[2..]);
        std::process::exit(code);
    }
    let tests = sensor_vm_tests::tests();
    let start = Instant::now();
    println!("\nrunning {} tests", tests.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        match test() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(err) => {
                failed += 1;
                println!("test {name} ... FAILED");
                for line in err.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        start.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
