//! `cargo xtask apiserver`: a kube-apiserver for the real API server tests,
//! built from Debian bookworm's `kubernetes` source package (1.20, the full
//! upstream tree with vendor/) with Debian's golang-go, and cached outside
//! the repository by package version. Nothing of Kubernetes enters the
//! repository.
//!
//! Steps, each skipped when its result exists:
//! 1. apt-get install golang-go etcd-server golang-github-modern-go-reflect2-dev
//!    (system sources; Debian's own packages);
//! 2. a private apt configuration (`Dir::Etc::sourcelist` with one deb-src
//!    line, its own lists directory) so the system's sources stay as they
//!    are, and `apt-get source --download-only kubernetes`;
//! 3. `dpkg-source -x --skip-debianization`: the upstream tree, extracted
//!    anew for every build (a tree an interrupted or failed build left
//!    behind, with empty generated tools in `_output/bin`, is never reused);
//! 4. vendor/github.com/modern-go/reflect2 replaced by Debian's copy (the
//!    vendored one corrupts memory under Go 1.19);
//! 5. `make WHAT=cmd/kube-apiserver` with GOPROXY=off, GOFLAGS=-mod=vendor,
//!    under `nice` (about 4 minutes on 2 cores; Go's own build cache makes
//!    a rebuild after an interruption quicker);
//! 6. the binary copied to CACHE/kube-apiserver-VERSION (written under a
//!    temporary name and renamed, so a half-copied binary is never found),
//!    and the tree removed.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run;

/// Where the build and the binary live (not in the repository).
pub const CACHE: &str = "/var/cache/svc-lb";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const PACKAGES: [&str; 6] = [
    "golang-go",
    "etcd-server",
    "golang-github-modern-go-reflect2-dev",
    // dpkg-source
    "dpkg-dev",
    // Kubernetes' hack/lib copies the generated tools into _output/bin
    // with rsync; without it they are left empty.
    "rsync",
    "make",
];

/// The archive this machine's apt already uses for bookworm (from its
/// deb822 or one-line sources), so the deb-src entry points at the same
/// mirror.
fn bookworm_archive() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let name = path.to_string_lossy();
                if name.ends_with(".sources") || name.ends_with(".list") {
                    texts.push(fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for text in &texts {
        // deb822 stanzas: URIs + Suites.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites.split_whitespace().any(|s| s == "bookworm")
                && let Some(uri) = uris.split_whitespace().next()
            {
                return Ok(uri.to_owned());
            }
        }
        // One-line entries: deb [options] URI SUITE COMPONENTS...
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("deb "))
        {
            let words: Vec<&str> = line
                .split_whitespace()
                .skip(1)
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.get(1) == Some(&"bookworm")
                && let Some(uri) = words.first()
            {
                return Ok((*uri).to_owned());
            }
        }
    }
    bail!(
        "no bookworm archive in this machine's apt sources: the API server tier needs Debian 12's kubernetes source package"
    )
}
const REFLECT2: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

/// Builds (or finds cached) kube-apiserver; returns its path.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let cache = Path::new(CACHE);
    let apt_dir = cache.join("apt");
    fs::create_dir_all(apt_dir.join("lists/partial"))
        .with_context(|| format!("creating {}", apt_dir.display()))?;
    let sources = apt_dir.join("sources.list");
    let archive = bookworm_archive()?;
    fs::write(
        &sources,
        format!("deb-src [signed-by={KEYRING}] {archive} bookworm main\n"),
    )?;
    let private_apt = |program: &str| {
        let mut command = Command::new(program);
        command
            .arg(format!("-oDir::Etc::sourcelist={}", sources.display()))
            .arg("-oDir::Etc::sourceparts=/dev/null")
            .arg(format!(
                "-oDir::State::Lists={}",
                apt_dir.join("lists").display()
            ));
        command
    };
    let version = source_version(&mut private_apt("apt-cache"));
    let version = match version {
        Some(version) => version,
        None => {
            run(private_apt("apt-get").args(["update", "-q"]))?;
            source_version(&mut private_apt("apt-cache"))
                .context("no kubernetes source package in bookworm's deb-src")?
        }
    };
    let binary = cache.join(format!("kube-apiserver-{version}"));
    if binary.is_file() {
        println!("xtask apiserver: cached {}", binary.display());
        return Ok(binary);
    }
    println!("xtask apiserver: building kube-apiserver {version} (about 4 minutes on 2 cores)");
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if !missing.is_empty() {
        // A machine that has never installed anything may have no package
        // lists yet.
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))?;
    }
    let src = cache.join("src");
    fs::create_dir_all(&src)?;
    let dsc = src.join(format!(
        "kubernetes_{}.dsc",
        version.split_once(':').map_or(version.as_str(), |(_, v)| v)
    ));
    if !dsc.is_file() {
        run(private_apt("apt-get").current_dir(&src).args([
            "source",
            "--download-only",
            "-q",
            "kubernetes",
        ]))?;
    }
    let tree = src.join(format!("kubernetes-{version}"));
    let built = build_in_fresh_tree(&src, &dsc, &tree);
    // Whatever happened, the tree is not kept: the next build starts from
    // the source package again.
    let _ = fs::remove_dir_all(&tree);
    let built = built?;
    let partial = cache.join(format!("kube-apiserver-{version}.partial"));
    fs::copy(&built, &partial).with_context(|| format!("caching {}", binary.display()))?;
    fs::rename(&partial, &binary).with_context(|| format!("caching {}", binary.display()))?;
    let _ = fs::remove_file(&built);
    println!("xtask apiserver: cached {}", binary.display());
    Ok(binary)
}

/// Extracts the upstream tree (removing any earlier one), builds
/// kube-apiserver in it and moves the binary out next to the tree.
fn build_in_fresh_tree(src: &Path, dsc: &Path, tree: &Path) -> anyhow::Result<PathBuf> {
    if tree.exists() {
        fs::remove_dir_all(tree)
            .with_context(|| format!("removing the earlier build tree {}", tree.display()))?;
    }
    let extracted = run(Command::new("dpkg-source")
        .current_dir(src)
        .args(["-x", "--skip-debianization"])
        .arg(dsc)
        .arg(tree));
    if let Err(error) = extracted {
        // A download cut short fails its checksums: fetch it again next time.
        for entry in fs::read_dir(src)?.filter_map(Result::ok) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("kubernetes_")
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        return Err(error.context("unpacking the kubernetes source package"));
    }
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    let _ = fs::remove_dir_all(&vendored);
    run(Command::new("cp").args(["-r", REFLECT2]).arg(&vendored))?;
    run(Command::new("nice")
        .args(["-n", "10", "make", "WHAT=cmd/kube-apiserver"])
        .current_dir(tree)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=vendor"))?;
    let built = tree.join("_output/bin/kube-apiserver");
    let size = fs::metadata(&built).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        bail!("make finished but {} is missing or empty", built.display());
    }
    let out = src.join("kube-apiserver.built");
    fs::rename(&built, &out).with_context(|| format!("moving {}", built.display()))?;
    Ok(out)
}

/// The version of the kubernetes source package the private lists know.
fn source_version(apt_cache: &mut Command) -> Option<String> {
    let output = apt_cache.args(["showsrc", "kubernetes"]).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .map(|version| version.trim().to_owned())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}
