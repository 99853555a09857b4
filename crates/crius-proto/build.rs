fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("crius/v1/images.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    tonic_prost_build::configure()
        .compile_protos(&[file], &[root])
        .expect("compiling proto/crius/v1/images.proto (is protoc installed?)");
}
