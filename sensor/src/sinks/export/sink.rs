//! Where exported lines go: stdout, or a file rotated by size.
//!
//! A file receives whole lines only: every batch of lines is one `write(2)` on a file opened
//! `O_APPEND`, so a shipper reading it never sees half a line at a batch boundary. Rotation
//! happens between batches: `PATH.N-2` -> `PATH.N-1`, ..., `PATH` -> `PATH.1`, then a new
//! `PATH`; the oldest beyond `max_files` is deleted. Renames keep the inode, so a shipper that
//! follows files by inode reads a rotated file to its end.
//!
//! After a crash, lines written after the last committed cursor would be written again: at
//! open, the active file is cut back to the committed size (when it is still the same file),
//! so every line is in the files exactly once.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The active file as of a committed cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    pub ino: u64,
    pub size: u64,
}

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    ino: u64,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<(File, u64, u64)> {
    // Events name processes, files and pods: root's alone, as the journal.
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta.ino(), meta.len()))
}

/// `PATH.n`
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (or creates) `path`; when `committed` names this same file and it is longer, the
    /// uncommitted tail is cut. Returns the file and the bytes cut.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_files: u32,
        committed: Option<FileMark>,
    ) -> io::Result<(Self, u64)> {
        let (file, ino, mut size) = open_append(path)?;
        let mut cut = 0;
        if let Some(mark) = committed
            && mark.ino == ino
            && size > mark.size
        {
            file.set_len(mark.size)?;
            cut = size - mark.size;
            size = mark.size;
        }
        Ok((
            Self {
                path: path.to_owned(),
                max_bytes,
                max_files: max_files.max(2),
                file,
                ino,
                size,
            },
            cut,
        ))
    }

    pub fn mark(&self) -> FileMark {
        FileMark {
            ino: self.ino,
            size: self.size,
        }
    }

    /// Whether the active file is full (rotate before the next batch).
    pub fn full(&self) -> bool {
        self.size >= self.max_bytes
    }

    /// Appends whole lines in one write. On failure, what was written of them is cut again
    /// (a retry writes them whole).
    pub fn write(&mut self, lines: &[u8]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.file.write_all(lines) {
            let _ = self.file.set_len(self.size);
            return Err(err);
        }
        self.size += lines.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Shift the rotated files, move the active one to `PATH.1` and start a new one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let last = self.max_files - 1;
        match fs::remove_file(rotated(&self.path, last)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..last).rev() {
            match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        let (file, ino, size) = open_append(&self.path)?;
        self.file = file;
        self.ino = ino;
        self.size = size;
        Ok(())
    }
}

/// An exporter's destination.
#[derive(Debug)]
pub enum Sink {
    Stdout(io::Stdout),
    File(RotatingFile),
}

impl Sink {
    pub fn write(&mut self, lines: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout(out) => {
                let mut lock = out.lock();
                lock.write_all(lines)?;
                lock.flush()
            }
            Self::File(f) => f.write(lines),
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        match self {
            Self::Stdout(_) => Ok(()),
            Self::File(f) => f.sync(),
        }
    }

    pub fn mark(&self) -> Option<FileMark> {
        match self {
            Self::Stdout(_) => None,
            Self::File(f) => Some(f.mark()),
        }
    }
}
