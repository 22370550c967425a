//! Raw small-file rates of a directory's file system, the floor under every small PUT
//! and DELETE of a volume server: one thread, no HTTP, no fsync. Each step is timed on
//! its own over `count` files: create + write 16 bytes + close (in a scratch directory,
//! as a volume writes its temp file), rename into a two-level directory tree (as a
//! volume moves it into place), unlink; and `mkdir` of fresh directories (the
//! directory chain a PUT of a new key may need).

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

/// Rates measured by [`measure`], per second.
#[derive(Debug, serde::Serialize)]
pub struct SmallFiles {
    /// Files per step.
    pub count: u32,
    /// create + write 16 bytes + close.
    pub create_write_close_per_sec: f64,
    /// rename into a 2-level directory tree.
    pub rename_per_sec: f64,
    /// unlink.
    pub unlink_per_sec: f64,
    /// mkdir of a new directory.
    pub mkdir_per_sec: f64,
}

/// Measures the small-file rates under `dir` (a scratch directory is made and removed).
pub fn measure(dir: &Path, count: u32) -> anyhow::Result<SmallFiles> {
    anyhow::ensure!(count > 0, "--small-files must be at least 1");
    let base = dir.join(format!(".hoard-bench-files-{}", super::run_id()));
    let done = run(&base, count);
    let _ = std::fs::remove_dir_all(&base);
    done
}

fn run(base: &Path, count: u32) -> anyhow::Result<SmallFiles> {
    let (tmp, tree) = (base.join("tmp"), base.join("tree"));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // The tree's directories exist before the rename step, as for an existing key's
    // directory; their creation is the mkdir step.
    let dirs: Vec<_> = (0..count)
        .map(|i| tree.join(format!("{:02x}/{:02x}", i % 256, (i / 256) % 256)))
        .collect();
    let t = Instant::now();
    let mut made = 0u32;
    for d in &dirs {
        match std::fs::create_dir_all(d) {
            Ok(()) => made += 1,
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", d.display())),
        }
    }
    let mkdir = t.elapsed().as_secs_f64();
    let names: Vec<_> = (0..count).map(|i| tmp.join(format!("f{i}"))).collect();
    let t = Instant::now();
    for n in &names {
        let mut f =
            std::fs::File::create(n).with_context(|| format!("creating {}", n.display()))?;
        f.write_all(b"value-0123456789")?;
    }
    let create = t.elapsed().as_secs_f64();
    let targets: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| d.join(format!("v{i}")))
        .collect();
    let t = Instant::now();
    for (from, to) in names.iter().zip(&targets) {
        std::fs::rename(from, to).with_context(|| format!("renaming {}", from.display()))?;
    }
    let rename = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for f in &targets {
        std::fs::remove_file(f).with_context(|| format!("unlinking {}", f.display()))?;
    }
    let unlink = t.elapsed().as_secs_f64();
    let per_sec = |s: f64| f64::from(count) / s.max(1e-9);
    Ok(SmallFiles {
        count,
        create_write_close_per_sec: per_sec(create),
        rename_per_sec: per_sec(rename),
        unlink_per_sec: per_sec(unlink),
        // create_dir_all of an existing leaf is one stat; count the calls made.
        mkdir_per_sec: f64::from(made) / mkdir.max(1e-9),
    })
}
