//! The web UI in a real browser: `ui/tests/browser.mjs` drives Debian's headless Chromium with
//! playwright-core against `sightline serve --demo` (this build's binary). `scripts/test.sh`
//! installs `chromium` and the npm packages first.
//!
//! Screenshots of every view go to `target/ui-screenshots/`, or to `SIGHTLINE_SCREENSHOTS`
//! (`SIGHTLINE_WARMUP=600 SIGHTLINE_SCREENSHOTS=docs/screenshots` refreshes the README's, after
//! ten minutes of the demo).

use std::path::Path;
use std::process::Command;

#[test]
fn every_view_works_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let playwright = root.join("ui/tests/node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "playwright-core is not installed: run `npm ci --prefix ui/tests` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    let screenshots = std::env::var("SIGHTLINE_SCREENSHOTS")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|_| root.join("target/ui-screenshots"));
    let output = Command::new("node")
        .arg(root.join("ui/tests/browser.mjs"))
        .current_dir(root)
        .env("SIGHTLINE_BIN", env!("CARGO_BIN_EXE_sightline"))
        .env("SIGHTLINE_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (Node.js 18 or later)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser tests failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("browser checks passed"), "{stdout}");
    for view in ["map", "dashboard", "search", "trace", "top", "trace-10k"] {
        assert!(
            screenshots.join(format!("{view}.png")).is_file(),
            "no screenshot of {view}"
        );
    }
}
