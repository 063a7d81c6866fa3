//! Compiles proto/rollcall/v1/*.proto with protox (no protoc needed) and
//! writes the encoded descriptor set that the server's reflection serves.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "rollcall/v1/report.proto",
    "rollcall/v1/agent.proto",
    "rollcall/v1/operator.proto",
    "rollcall/v1/campaign.proto",
    "rollcall/v1/admin.proto",
    "rollcall/v1/revoke.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // compile_fds does not write the descriptor set itself; reflection needs it.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("rollcall_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Sorted maps encode the same content to the same bytes, which the
        // server relies on to tell whether a packed section changed.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
