//! Generated types and service stubs for `sensor.v1` (see `sensor/v1/sensor.proto`).

#[expect(clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("sensor.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sensor_v1_descriptor");
