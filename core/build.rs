//! Generates the prost types for Postern's committed `.proto` files.
fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/e2e.proto");
    println!("cargo:rerun-if-changed=proto/message.proto");
    println!("cargo:rerun-if-changed=proto/relay.proto");
    println!("cargo:rerun-if-changed=proto/local.proto");
    println!("cargo:rerun-if-changed=proto/directory.proto");
    prost_build::Config::new().compile_protos(
        &[
            "proto/e2e.proto",
            "proto/message.proto",
            "proto/relay.proto",
            "proto/local.proto",
            "proto/directory.proto",
        ],
        &["proto/"],
    )
}
