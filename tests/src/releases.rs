//! Earlier releases of the hub, for upgrade tests: the `hub` binary of a git tag, built by
//! `tests/tools/build-release.sh` into `~/.cache/fleethub/releases/<tag>/` (once; later
//! runs find it there), with the tag's source tree beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The release before this one: the tag the rolling-upgrade test runs beside the current hub.
pub const PREVIOUS: &str = "v0.4.0";

/// Overrides the previous release's `hub` binary (a path), e.g. in CI that built it in a
/// cached step of its own.
pub const PREVIOUS_HUB_ENV: &str = "FLEETHUB_PREVIOUS_HUB";

/// An earlier release: its `hub` binary and its source tree.
#[derive(Debug, Clone)]
pub struct Release {
    /// The git tag.
    pub tag: String,
    /// Its `hub` binary.
    pub hub: PathBuf,
    /// Its source tree (`git archive` of the tag), when built here.
    pub src: Option<PathBuf>,
}

impl Release {
    /// The migrations this release's hub knows for a backend (`postgres`, `sqlite`): their
    /// versions, from its source tree; `None` without one.
    pub fn migrations(&self, backend: &str) -> Option<Vec<i64>> {
        migration_versions(&self.src.as_ref()?.join("migrations").join(backend)).ok()
    }
}

/// The versions of the `NNNN_name.sql` files in a migrations directory, in order.
pub fn migration_versions(dir: &Path) -> anyhow::Result<Vec<i64>> {
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// The `hub` of release `tag`: `$FLEETHUB_PREVIOUS_HUB` for [`PREVIOUS`] when set, else the
/// cached build, else built now by `tests/tools/build-release.sh` (minutes; it relinks
/// this workspace's `hub` afterwards, so call this before starting current hubs).
pub fn release(tag: &str) -> anyhow::Result<Release> {
    if tag == PREVIOUS
        && let Some(hub) = std::env::var_os(PREVIOUS_HUB_ENV).filter(|p| !p.is_empty())
    {
        let hub = PathBuf::from(hub);
        if !hub.is_file() {
            bail!("{PREVIOUS_HUB_ENV}={} is not a file", hub.display());
        }
        let src = hub
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("src"))
            .filter(|s| s.is_dir());
        return Ok(Release {
            tag: tag.to_string(),
            hub,
            src,
        });
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-release.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(tag)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {tag} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let hub = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let src = hub
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("src"))
        .filter(|s| s.is_dir());
    Ok(Release {
        tag: tag.to_string(),
        hub,
        src,
    })
}
