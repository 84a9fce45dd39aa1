//! Compiles the admin API (proto/authgate/admin/v1/admin.proto) into Rust at build time.
//! protox parses the .proto in pure Rust, so the build needs no `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/authgate/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
