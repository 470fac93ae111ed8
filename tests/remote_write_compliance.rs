//! Prometheus's own remote-write receiver compliance tests (`github.com/prometheus/compliance`,
//! `remotewrite/receiver`), fetched from the Go module proxy at test time — never copied into
//! this repository — built once (cached under the target directory) and run against the real
//! binary: 1.0 and 2.0 samples, histograms, exemplars, metadata, start timestamps, bad content
//! types and encodings, corrupt bodies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

const MODULE: &str = "github.com/prometheus/compliance/remotewrite/receiver";
const VERSION: &str = "v0.0.0-20260806071727-67b8327a2e93";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            // The module cache is read-only; the build writes beside the sources.
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// The compliance test binary, built from the module proxy's copy once per version.
fn compliance_binary() -> PathBuf {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rw-compliance-{VERSION}"));
    let binary = cache.join("compliance.test");
    if binary.exists() {
        return binary;
    }
    let source = common::go_module_dir(MODULE, VERSION);
    let build = cache.join("src");
    let _ = std::fs::remove_dir_all(&build);
    copy_dir(&source, &build);
    let status = Command::new("go")
        .args(["test", "-c", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&build)
        .status()
        .expect("go test -c");
    assert!(status.success(), "building the compliance tests failed");
    binary
}

#[test]
fn prometheus_remote_write_compliance_suite_passes() {
    let binary = compliance_binary();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "remote_write:\n  - name: sightline\n    url: {}\n",
            server.remote_write_url()
        ),
    )
    .unwrap();
    let out = Command::new(&binary)
        .arg("-test.v")
        .env("PROMETHEUS_RW2_COMPLIANCE_CONFIG_FILE", &config)
        .current_dir(dir.path())
        .output()
        .expect("run the compliance tests");
    let log = String::from_utf8_lossy(&out.stdout);
    let passed = log.matches("--- PASS").count();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("--- FAIL")).collect();
    println!(
        "remote write compliance: {passed} passed, {} failed",
        failed.len()
    );
    assert!(
        out.status.success() && failed.is_empty(),
        "failures: {failed:#?}\n{}",
        log.lines().rev().take(60).collect::<Vec<_>>().join("\n")
    );
    assert!(passed > 400, "{passed} cases ran");
    let mut server = server;
    assert!(server.is_running(), "the server stays up");
    server.stop();
}
