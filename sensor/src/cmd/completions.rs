//! `sensor completions bash|zsh|fish` (shell completions on stdout) and `sensor man DIR` (man
//! pages, one per subcommand; `cargo xtask dist` writes them beside the binary).

use std::{io, path::Path, process::ExitCode};

use clap::{CommandFactory as _, ValueEnum};

use super::{Cli, EXIT_FAILURE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Print the completion script for `shell`.
pub fn completions(shell: Shell) -> ExitCode {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "sensor", &mut io::stdout());
    ExitCode::SUCCESS
}

/// Write `sensor.1` and `sensor-<subcommand>.1` into `dir`.
pub fn man(dir: &Path) -> ExitCode {
    match write_man(dir) {
        Ok(n) => {
            println!("sensor man: {n} page(s) in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sensor man: error: {}: {e}", dir.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn write_man(dir: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut pages = vec![(String::from("sensor"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((format!("sensor-{}", sub.get_name()), sub.clone()));
    }
    for (name, page) in &pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page.clone())
            .title(name.to_uppercase())
            .render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)?;
    }
    Ok(pages.len())
}
