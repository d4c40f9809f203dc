//! Compiles `sensor/v1/*.proto` with protox (pure Rust; no system protoc) and generates the
//! prost types and tonic client/server with tonic-prost-build.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let protos = ["sensor/v1/sensor.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // For server reflection.
    std::fs::write(
        out.join("sensor_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
