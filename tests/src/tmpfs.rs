//! A small tmpfs mounted for a test that needs a disk that fills up (an
//! agent's data dir, an operator's store). Needs root; unmounted on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted (lazily if busy) and its mount point removed on drop.
pub struct Tmpfs {
    dir: PathBuf,
    _parent: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `16m`) at `dir`,
    /// created when missing, mode 0700.
    pub fn mount_at(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("tmpfs mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_owned(),
            _parent: None,
        }
    }

    /// Mounts a tmpfs of `size` in a temp dir of its own.
    pub fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().expect("temp dir");
        let mut tmpfs = Tmpfs::mount_at(&parent.path().join("tmpfs"), size);
        tmpfs._parent = Some(parent);
        tmpfs
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes zeros to a file until the file system is full; the file's path
    /// (remove it to free the space).
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let block = vec![0_u8; 64 * 1024];
        for _ in 0..100_000 {
            if file.write_all(&block).and_then(|()| file.flush()).is_err() {
                return path;
            }
        }
        panic!("the tmpfs never filled up");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
