//! Step 1, `parse`: protox compiles the requested protos and their imports
//! with source info (the positions diagnostics point at), without a `protoc`
//! binary; Keel's options, protovalidate's rules and the `google.api` HTTP
//! options are served from the bundled copies.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, FileDescriptor};
use prost_types::FileDescriptorSet;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::error::Error;
use crate::{HTTP_PROTOS, OPTIONS_PROTO, OPTIONS_PROTO_NAME, VALIDATE_PROTO, VALIDATE_PROTO_NAME};

/// What protox compiled.
pub(crate) struct Parsed {
    /// The include directories, in order.
    pub(crate) includes: Vec<PathBuf>,
    /// The path on disk of each file read from disk, by its import name.
    pub(crate) paths: HashMap<String, PathBuf>,
    /// The import names of the files asked for (not their imports).
    pub(crate) requested: HashSet<String>,
    /// The encoded `FileDescriptorSet` of every file, imports too.
    pub(crate) encoded: Vec<u8>,
    /// Every file, custom options readable (prost-reflect).
    pub(crate) pool: DescriptorPool,
    /// The requested files, in the pool.
    pub(crate) files: Vec<FileDescriptor>,
    /// Every file as prost-build reads it.
    pub(crate) fds: FileDescriptorSet,
    /// The packages of the requested files: the modules written.
    pub(crate) packages: HashSet<String>,
}

/// Compiles `protos` (paths, each under one of `includes`) and their imports.
pub(crate) fn parse(protos: &[impl AsRef<Path>], includes: Vec<PathBuf>) -> Result<Parsed, Error> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(BundledOptions);
    for include in &includes {
        resolver.add(IncludeFileResolver::new(include.clone()));
    }
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(protos)
        .map_err(|e| locate_on_disk(Error::from_protox(e, bundled_pool().as_ref()), &includes))?;

    let paths: HashMap<String, PathBuf> = compiler
        .files()
        .filter_map(|f| Some((f.name().to_owned(), f.path()?.to_owned())))
        .collect();
    let requested: HashSet<String> = compiler
        .files()
        .filter(|f| !f.is_import())
        .map(|f| f.name().to_owned())
        .collect();

    let encoded = compiler.encode_file_descriptor_set();
    let pool = compiler.descriptor_pool();
    let files: Vec<_> = pool
        .files()
        .filter(|f| requested.contains(f.name()))
        .collect();

    // prost-build needs every file (imports too) to resolve types; only
    // the requested packages' modules are written.
    let fds = compiler.file_descriptor_set();
    let packages: HashSet<String> = fds
        .file
        .iter()
        .filter(|f| requested.contains(f.name()))
        .map(|f| f.package().to_owned())
        .collect();
    Ok(Parsed {
        includes,
        paths,
        requested,
        encoded,
        pool,
        files,
        fds,
        packages,
    })
}

impl Parsed {
    /// Prints `cargo:rerun-if-changed` for every requested file and every
    /// include directory.
    pub(crate) fn rerun_if_changed(&self) {
        for name in &self.requested {
            if let Some(path) = self.paths.get(name) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        for include in &self.includes {
            println!("cargo:rerun-if-changed={}", include.display());
        }
    }
}

/// Serves the bundled `keel/v1/options.proto`.
struct BundledOptions;

impl FileResolver for BundledOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            File::from_source(name, OPTIONS_PROTO)
        } else if name == VALIDATE_PROTO_NAME {
            File::from_source(name, VALIDATE_PROTO)
        } else if let Some((_, source)) = HTTP_PROTOS.iter().find(|(n, _)| *n == name) {
            File::from_source(name, source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The bundled protos alone, compiled when a file fails: the names an
/// unknown one in Keel's options, `buf.validate` or `google.api.http` is
/// compared with ("did you mean …").
fn bundled_pool() -> Option<DescriptorPool> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(BundledOptions);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    let names = [OPTIONS_PROTO_NAME, VALIDATE_PROTO_NAME]
        .into_iter()
        .chain(HTTP_PROTOS.iter().map(|(name, _)| *name));
    compiler.open_files(names).ok()?;
    Some(compiler.descriptor_pool())
}

/// Rewrites a diagnostic's file from its import name to the path on disk.
fn locate_on_disk(error: Error, includes: &[PathBuf]) -> Error {
    match error {
        Error::Proto(mut d) => {
            if let Some(path) = includes
                .iter()
                .map(|i| i.join(&d.file))
                .find(|p| p.is_file())
            {
                d.file = path;
            }
            Error::Proto(d)
        }
        other => other,
    }
}
