//! Test support (feature `test-support`): builds small agent images locally, since tests cannot
//! pull from a registry. The image is a busybox root filesystem plus a script at `/agent.sh`,
//! imported with `docker import`; it is rebuilt only when the script changes.

use std::path::Path;
use std::process::Command;

/// Busybox applets linked into every test image.
const APPLETS: [&str; 19] = [
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
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    script.hash(&mut hasher);
    APPLETS.hash(&mut hasher);
    let image = format!("{repository}:{:016x}", hasher.finish());
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .expect("the docker CLI must be installed and the engine running for these tests");
    if inspect.status.success() {
        return image;
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: install it with `apt-get install -y busybox-static`"
    );
    let rootfs = tempfile::tempdir().expect("a temporary folder for the image");
    let root = rootfs.path();
    for directory in ["bin", "tmp", "home/agent", "etc", "run/secrets"] {
        std::fs::create_dir_all(root.join(directory)).expect("image folders");
    }
    // Docker copies the image directory's mode onto a tmpfs mounted over it.
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("mode of /tmp");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(root.join("agent.sh"), script).expect("agent script");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n",
    )
    .expect("passwd");
    let tarball = root.with_extension("tar");
    let tar = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar must be installed");
    assert!(tar.success(), "tar failed");
    let import = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin"])
        .arg(&tarball)
        .arg(&image)
        .output()
        .expect("docker import");
    let _ = std::fs::remove_file(&tarball);
    assert!(
        import.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    // Older builds of this repository's image (other script versions) are no longer needed.
    let listed = Command::new("docker")
        .args(["images", repository, "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker images");
    for stale in String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| *line != image)
    {
        let _ = Command::new("docker").args(["rmi", stale]).output();
    }
    image
}
