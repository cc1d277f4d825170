//! Test support (feature `test-support`): builds small agent images locally, since tests cannot
//! pull from a registry. The image is a busybox root filesystem plus a script at `/agent.sh`,
//! imported with `docker import`; it is rebuilt only when the script changes.

use std::path::Path;
use std::process::Command;

/// Busybox applets linked into every test image.
const APPLETS: [&str; 22] = [
    "sed",
    "date",
    "cut",
    "sh",
    "cat",
    "head",
    "sleep",
    "yes",
    "sha256sum",
    "rm",
    "ls",
    "wc",
    "touch",
    "id",
    "grep",
    "env",
    "printenv",
    "true",
    "false",
    "tr",
    "mkdir",
    "base64",
];

/// Returns `repository:<hash of script>`, importing it first if the engine does not have it.
/// Panics with a message saying what to install when busybox or Docker is missing.
pub fn busybox_image(repository: &str, script: &str) -> String {
    build_busybox_image(repository, script).unwrap_or_else(|error| panic!("{error}"))
}

/// [`busybox_image`] that returns what went wrong instead of panicking (for `nightcrier demo`,
/// which builds its agent image the same way).
pub fn build_busybox_image(repository: &str, script: &str) -> Result<String, String> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    script.hash(&mut hasher);
    APPLETS.hash(&mut hasher);
    let image = format!("{repository}:{:016x}", hasher.finish());
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .map_err(|error| {
            format!("the docker CLI must be installed and the engine running: {error}")
        })?;
    if inspect.status.success() {
        return Ok(image);
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err(
            "/bin/busybox is missing: install it with `apt-get install -y busybox-static`".into(),
        );
    }
    let io = |what: &str| {
        let what = what.to_owned();
        move |error: std::io::Error| format!("{what}: {error}")
    };
    let rootfs = tempfile::tempdir().map_err(io("a temporary folder for the image"))?;
    let root = rootfs.path();
    for directory in ["bin", "tmp", "home/agent", "etc", "run/secrets"] {
        std::fs::create_dir_all(root.join(directory)).map_err(io("image folders"))?;
    }
    // Docker copies the image directory's mode onto a tmpfs mounted over it.
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .map_err(io("mode of /tmp"))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(io("copy busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .map_err(io("applet link"))?;
    }
    std::fs::write(root.join("agent.sh"), script).map_err(io("agent script"))?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n",
    )
    .map_err(io("passwd"))?;
    let tarball = root.with_extension("tar");
    let tar = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .map_err(io("tar must be installed"))?;
    if !tar.success() {
        return Err("tar failed".into());
    }
    let import = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin"])
        .arg(&tarball)
        .arg(&image)
        .output()
        .map_err(io("docker import"))?;
    let _ = std::fs::remove_file(&tarball);
    if !import.status.success() {
        return Err(format!(
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        ));
    }
    // Older builds of this repository's image (other script versions) are no longer needed.
    if let Ok(listed) = Command::new("docker")
        .args(["images", repository, "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    {
        for stale in String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|line| *line != image)
        {
            let _ = Command::new("docker").args(["rmi", stale]).output();
        }
    }
    Ok(image)
}
