//! `sensor uninstall`: remove everything a `sensor run --pin-dir` left pinned (its links detach
//! and enforcement ends), then check that no sensor program is still loaded.

use std::{
    io,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use sensor_common::programs::PREFIX;

use super::DEFAULT_PIN_DIR;
use crate::kernel::pins::{generations, is_bpffs, remove_generation, unpin_links};

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The bpffs directory given to `sensor run --pin-dir`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR, env = "SENSOR_PIN_DIR")]
    pub pin_dir: PathBuf,
}

pub fn main(args: &UninstallArgs) -> ExitCode {
    let root = args.pin_dir.as_path();
    match uninstall(root) {
        Ok((generations, links)) => {
            println!(
                "sensor uninstall: removed {generations} generation(s), {links} pinned link(s) under {}",
                root.display()
            );
        }
        Err(err) => {
            eprintln!("sensor uninstall: {}: {err}", root.display());
            return ExitCode::FAILURE;
        }
    }
    // The kernel frees detached programs asynchronously (tracepoint links go through perf
    // event teardown): give it a moment before calling one still loaded.
    let deadline = Instant::now() + Duration::from_secs(3);
    let loaded = loop {
        let loaded = match loaded_sensor_programs() {
            Ok(loaded) => loaded,
            Err(err) => {
                // Listing programs needs CAP_SYS_ADMIN; the pins are gone either way.
                eprintln!("sensor uninstall: could not check for loaded programs: {err}");
                return ExitCode::SUCCESS;
            }
        };
        if loaded.is_empty() || Instant::now() >= deadline {
            break loaded;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if loaded.is_empty() {
        println!("no sensor program is loaded: enforcement has ended");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "sensor uninstall: {} sensor program(s) are still loaded, held by a running sensor (stop it, then run uninstall again): {}",
            loaded.len(),
            loaded.join(", ")
        );
        ExitCode::FAILURE
    }
}

fn loaded_sensor_programs() -> Result<Vec<String>, aya::programs::ProgramError> {
    let mut found = Vec::new();
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if let Some(n) = p.name_as_str().filter(|n| n.starts_with(PREFIX)) {
            found.push(format!("{n} (id {})", p.id()));
        }
    }
    Ok(found)
}

fn uninstall(root: &Path) -> io::Result<(usize, usize)> {
    if !root.exists() {
        return Ok((0, 0));
    }
    if !is_bpffs(root) {
        return Err(io::Error::other("not on a bpf file system"));
    }
    let mut links = 0;
    let generations = generations(root)?;
    for generation in &generations {
        links += unpin_links(generation)?;
        remove_generation(generation)?;
    }
    std::fs::remove_dir(root)?;
    Ok((generations.len(), links))
}
