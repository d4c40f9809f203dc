//! `vm-exit CODE`: ends the VM through QEMU's `isa-debug-exit` device (I/O port 0xf4), which
//! makes QEMU exit with status `(CODE << 1) | 1`. Root only (`ioperm`).

/// The `isa-debug-exit` device's port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const PORT: u16 = 0xf4;

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let parsed = match arg.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => arg.parse::<u8>(),
    };
    let Ok(code) = parsed else {
        eprintln!("usage: vm-exit CODE (0-255, decimal or 0x hex)");
        std::process::exit(2);
    };
    // SAFETY: plain syscall; grants this process access to the four ports from PORT.
    if unsafe { libc::ioperm(PORT.into(), 4, 1) } != 0 {
        eprintln!("vm-exit: ioperm: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: ioperm granted the port; writing it only signals QEMU's debug-exit device.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") PORT, in("al") code, options(nomem, nostack));
    }
    // QEMU exits on the write; reaching this line means no debug-exit device is present.
    eprintln!("vm-exit: QEMU did not exit (no isa-debug-exit device at {PORT:#x}?)");
    std::process::exit(1);
}
