//! The constants that include what codegen writes beside the generated
//! code: the module's `FILE_DESCRIPTOR_SET` (the encoded descriptor set)
//! and a service's `…_OPENAPI` (its OpenAPI document).

use proc_macro2::TokenStream;
use quote::quote;

use super::{Names, ident};
use crate::spec::ServiceSpec;

/// The `…_OPENAPI` constant of a service, when it has HTTP routes.
pub(super) fn openapi_const(spec: &ServiceSpec, names: &Names<'_>) -> Option<TokenStream> {
    let (snake, full_name) = (&names.snake, names.full_name);
    // The OpenAPI document codegen writes beside this file, when there are routes.
    spec.methods.iter().any(|m| !m.http.is_empty()).then(|| {
        let openapi_ident = ident(&format!("{}_OPENAPI", snake.to_uppercase()));
        let file = format!("{full_name}.openapi.json");
        let doc = format!(
            " The OpenAPI 3.1 document of `{full_name}`'s HTTP routes (serve it with `keel_rpc::Server::openapi`)."
        );
        quote! {
            #[doc = #doc]
            pub const #openapi_ident: &str = include_str!(#file);
        }
    })
}

/// The `FILE_DESCRIPTOR_SET` constant of a generated module.
pub(crate) fn descriptor_set_const(file_name: &str) -> String {
    format!(
        "\n/// The encoded `FileDescriptorSet` of the compiled protos and their imports, custom\n\
         /// options included: serve it with reflection (`keel_rpc::Server::reflection`).\n\
         pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(\"{file_name}\");\n"
    )
}
