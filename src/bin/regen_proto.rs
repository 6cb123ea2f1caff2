//! Regenerates `src/onnx/pb/onnx.rs` from the vendored `src/onnx/proto/onnx.proto3`.
//!
//! Pure Rust (protox + prost-build): no system `protoc` is needed.
//!
//! ```text
//! cargo run --features regen-proto --bin regen_proto           # rewrite the committed file
//! cargo run --features regen-proto --bin regen_proto -- --check # fail if it is stale
//! ```
//!
//! The generated file starts with a header recording FNV-1a 64 checksums of
//! the schema it came from and of its own body; the unit test
//! `onnx::tests::generated_code_is_fresh` checks both on every test run, so a
//! schema update without regeneration, or a hand edit, fails the suite
//! without building protox.
use std::path::{Path, PathBuf};

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = onnxq::ir::Fnv64::new();
    h.write(bytes);
    h.finish()
}

fn generate(proto_dir: &Path, out_dir: &Path) -> anyhow::Result<String> {
    let fds = protox::compile(["onnx.proto3"], [proto_dir])?;
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(fds)?;
    let body = std::fs::read_to_string(out_dir.join("onnx.rs"))?;
    let schema = std::fs::read(proto_dir.join("onnx.proto3"))?;
    Ok(format!(
        "// onnxq: generated from onnx.proto3 #{:016x}, body #{:016x}\n{body}",
        fnv64(&schema),
        fnv64(body.as_bytes())
    ))
}

fn main() -> anyhow::Result<()> {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let committed = root.join("src/onnx/pb/onnx.rs");
    let tmp = std::env::temp_dir().join(format!("onnxq-regen-proto-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let fresh = generate(&root.join("src/onnx/proto"), &tmp)?;
    std::fs::remove_dir_all(&tmp).ok();
    if check {
        let old = std::fs::read_to_string(&committed).unwrap_or_default();
        if old != fresh {
            anyhow::bail!(
                "{} is stale: run `cargo run --features regen-proto --bin regen_proto`",
                committed.display()
            );
        }
        println!("{} is up to date", committed.display());
    } else {
        std::fs::write(&committed, fresh)?;
        println!("wrote {}", committed.display());
    }
    Ok(())
}
