//! A small filesystem of its own for a test that fills it: a tmpfs, which only root (or a
//! process allowed to mount) can make. Unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `Err` says why it cannot be mounted here, for the test's skip message.
    pub fn mount(path: &Path, megabytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={megabytes}m"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` until the filesystem has no room left; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join(name)).expect("filler is created");
        let mut written = 0;
        // Big writes first, then small ones for what is left between them.
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![b'x'; size];
            while file.write_all(&chunk).is_ok() {
                written += size as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    pub fn free(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("filler is removed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of the test still holding a file open must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
