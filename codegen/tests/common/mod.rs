//! Compiling a one-file proto (`test/v1/svc.proto`) in a temporary directory.

/// Compiles `source` as `protos/test/v1/svc.proto`; the directory holds the
/// proto and the generated `out/`, and goes with the returned handle.
pub(crate) fn compile(
    source: &str,
) -> (
    tempfile::TempDir,
    Result<keel_rpc_codegen::Generated, keel_rpc_codegen::Error>,
) {
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("protos/test/v1");
    std::fs::create_dir_all(&protos).unwrap();
    std::fs::write(protos.join("svc.proto"), source).unwrap();
    let result = keel_rpc_codegen::configure()
        .out_dir(dir.path().join("out"))
        .emit_rerun_if_changed(false)
        .compile(&[protos.join("svc.proto")], &[dir.path().join("protos")]);
    (dir, result)
}
