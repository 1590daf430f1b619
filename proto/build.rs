//! Compiles `proto/*.proto` with protox (pure Rust, no protoc binary) and
//! generates both the real and the madsim-simulated tonic code from the
//! resulting descriptor set. Without the `grpc` feature only the messages
//! are generated.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deeb.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("deeb_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
