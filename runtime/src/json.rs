//! Messages in the proto3 JSON mapping (camelCase names, 64-bit integers as
//! strings, enums by name, `Timestamp` and `Duration` as RFC 3339 strings),
//! as grpcurl prints them, from the descriptors codegen embeds
//! (`FILE_DESCRIPTOR_SET`).

use prost_reflect::{DescriptorError, DescriptorPool, DynamicMessage};

/// Why a message could not be shown as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The descriptor set does not decode.
    #[error("reading the descriptors: {0}")]
    Descriptors(#[from] DescriptorError),
    /// The descriptors do not describe the message.
    #[error("{0} is not a message of these descriptors")]
    UnknownMessage(String),
    /// The message's bytes are not a `name`.
    #[error("decoding {name}: {source}")]
    Decode {
        /// The message's full name.
        name: String,
        /// What prost said.
        source: prost::DecodeError,
    },
    /// Serialising failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Shows messages as proto3 JSON.
///
/// ```
/// # fn run() -> Result<(), keel_rpc::json::JsonError> {
/// // With generated code: `Json::new(user_v1::FILE_DESCRIPTOR_SET)?`.
/// let set = prost_types::FileDescriptorSet::default();
/// let json = keel_rpc::json::Json::new(&prost::Message::encode_to_vec(&set))?;
/// assert!(json.to_string_pretty("user.v1.User", &()).is_err()); // not described
/// # Ok(())
/// # }
/// # run().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Json {
    pool: DescriptorPool,
}

impl Json {
    /// From an encoded `FileDescriptorSet`.
    pub fn new(descriptor_set: &[u8]) -> Result<Json, JsonError> {
        Ok(Json {
            pool: DescriptorPool::decode(descriptor_set)?,
        })
    }

    /// `message`, a `full_name` (`user.v1.User`), as indented JSON.
    pub fn to_string_pretty(
        &self,
        full_name: &str,
        message: &impl prost::Message,
    ) -> Result<String, JsonError> {
        let descriptor = self
            .pool
            .get_message_by_name(full_name)
            .ok_or_else(|| JsonError::UnknownMessage(full_name.to_owned()))?;
        let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
            .map_err(|source| JsonError::Decode {
                name: full_name.to_owned(),
                source,
            })?;
        Ok(serde_json::to_string_pretty(&dynamic)?)
    }
}
