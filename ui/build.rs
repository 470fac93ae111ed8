//! Embeds every file under `assets/` into the binary: a table of path, content type, ETag, the
//! bytes, and a gzip copy when that is smaller. Adding a file to `assets/` needs no code change.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo:rerun-if-changed=assets");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut table = String::from("&[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let relative = file
            .strip_prefix(&root)
            .expect("collected under root")
            .to_str()
            .expect("asset paths are UTF-8")
            .replace('\\', "/");
        let bytes = std::fs::read(file).expect("read asset");
        let gzip_name = format!("{}.gz", relative.replace('/', "__"));
        let gzipped = gzip(&bytes);
        let gzip_expr = if gzipped.len() + 64 < bytes.len() {
            std::fs::write(out_dir.join(&gzip_name), &gzipped).expect("write gzip asset");
            format!("Some(include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{gzip_name}\")))")
        } else {
            "None".to_string()
        };
        writeln!(
            table,
            "    Asset {{ path: {relative:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", \
             body: include_bytes!({:?}), gzip: {gzip_expr} }},",
            content_type(&relative),
            fnv1a64(&bytes),
            file.display().to_string(),
        )
        .expect("write to string");
    }
    table.push(']');
    std::fs::write(out_dir.join("assets.rs"), table).expect("write asset table");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read assets dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "md" | "txt" => "text/plain; charset=utf-8",
        _ if path.contains("LICENSE") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

/// Content hash for the ETag: stable across builds of the same file.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
