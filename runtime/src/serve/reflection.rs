//! Server reflection (`grpc.reflection.v1` and `v1alpha`), as grpc-go serves
//! it.
//!
//! tonic-reflection ends the whole stream with a status when a request names
//! an unknown symbol or file; the protocol answers such a request with an
//! `error_response` message and goes on serving the stream's later requests,
//! which is what clients that ask several questions on one stream (grpcurl,
//! IDEs) expect. A file is sent with the dependencies not yet sent on the
//! stream, and extensions are found by their extendee and number.
//!
//! The files are kept as the bytes codegen embedded, never decoded and
//! re-encoded, so custom options (Keel's, `google.api.http`) reach clients.
//! v1alpha's messages are v1's on the wire, so one implementation serves
//! both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

use crate::Error;

/// An encoded `FileDescriptorSet` with each file's bytes left as they are.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFileSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// One file: its encoded descriptor and the names of the files it imports.
#[derive(Debug)]
struct File {
    encoded: Vec<u8>,
    dependencies: Vec<String>,
}

/// What reflection answers from: every file by name, and the file that
/// defines each symbol and extension.
#[derive(Debug, Default)]
struct Index {
    files: HashMap<String, File>,
    /// Fully qualified symbol (package, message, field, enum, value, service,
    /// method) → its file's name.
    symbols: HashMap<String, String>,
    /// Extended message (fully qualified) → extension number → its file's name.
    extensions: HashMap<String, BTreeMap<i32, String>>,
    services: BTreeSet<String>,
}

impl Index {
    /// The index of the given encoded `FileDescriptorSet`s; the first of two
    /// files with one name is kept.
    fn new(sets: &[&[u8]]) -> Result<Self, Error> {
        let mut index = Index::default();
        for set in sets {
            let set = RawFileSet::decode(*set).map_err(Error::Reflection)?;
            for encoded in set.file {
                let file =
                    FileDescriptorProto::decode(encoded.as_slice()).map_err(Error::Reflection)?;
                index.add(file, encoded);
            }
        }
        Ok(index)
    }

    fn add(&mut self, file: FileDescriptorProto, encoded: Vec<u8>) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package();
        let mut names = Vec::new();
        for message in &file.message_type {
            self.message(&name, package, message, &mut names);
        }
        for enumeration in &file.enum_type {
            enum_names(package, enumeration, &mut names);
        }
        for extension in &file.extension {
            self.extension(&name, extension);
        }
        for service in &file.service {
            let service_name = qualified(package, service.name());
            for method in &service.method {
                names.push(qualified(&service_name, method.name()));
            }
            self.services.insert(service_name.clone());
            names.push(service_name);
        }
        for symbol in names {
            self.symbols.entry(symbol).or_insert_with(|| name.clone());
        }
        let dependencies = file.dependency;
        self.files.insert(
            name,
            File {
                encoded,
                dependencies,
            },
        );
    }

    fn message(
        &mut self,
        file: &str,
        scope: &str,
        message: &DescriptorProto,
        names: &mut Vec<String>,
    ) {
        let name = qualified(scope, message.name());
        for field in &message.field {
            names.push(qualified(&name, field.name()));
        }
        for oneof in &message.oneof_decl {
            names.push(qualified(&name, oneof.name()));
        }
        for nested in &message.nested_type {
            self.message(file, &name, nested, names);
        }
        for enumeration in &message.enum_type {
            enum_names(&name, enumeration, names);
        }
        for extension in &message.extension {
            self.extension(file, extension);
        }
        names.push(name);
    }

    fn extension(&mut self, file: &str, extension: &prost_types::FieldDescriptorProto) {
        let extendee = extension.extendee().trim_start_matches('.').to_owned();
        self.extensions
            .entry(extendee)
            .or_default()
            .entry(extension.number())
            .or_insert_with(|| file.to_owned());
    }

    /// The answer to one request; `sent` holds the files already sent on
    /// this stream (a file's dependencies are sent with it once).
    fn answer(
        &self,
        request: v1::ServerReflectionRequest,
        sent: &mut BTreeSet<String>,
    ) -> v1::ServerReflectionResponse {
        let answer = match &request.message_request {
            None => Err(Status::invalid_argument("the request names no question")),
            Some(MessageRequest::FileByFilename(file)) => self.files_from(file, sent),
            Some(MessageRequest::FileContainingSymbol(symbol)) => match self.symbols.get(symbol) {
                Some(file) => self.files_from(file, sent),
                None => Err(Status::not_found(format!("symbol {symbol:?} not found"))),
            },
            Some(MessageRequest::FileContainingExtension(extension)) => {
                let containing = extension.containing_type.as_str();
                let number = extension.extension_number;
                match (self.extensions.get(containing)).and_then(|numbers| numbers.get(&number)) {
                    Some(file) => self.files_from(file, sent),
                    None => Err(Status::not_found(format!(
                        "no extension {number} of {containing:?}"
                    ))),
                }
            }
            Some(MessageRequest::AllExtensionNumbersOfType(message)) => {
                match self.symbols.contains_key(message) {
                    true => Ok(MessageResponse::AllExtensionNumbersResponse(
                        v1::ExtensionNumberResponse {
                            base_type_name: message.clone(),
                            extension_number: (self.extensions.get(message))
                                .map(|numbers| numbers.keys().copied().collect())
                                .unwrap_or_default(),
                        },
                    )),
                    false => Err(Status::not_found(format!("type {message:?} not found"))),
                }
            }
            Some(MessageRequest::ListServices(_)) => Ok(MessageResponse::ListServicesResponse(
                v1::ListServiceResponse {
                    service: (self.services.iter())
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                },
            )),
        };
        let message_response = answer.unwrap_or_else(|status| {
            MessageResponse::ErrorResponse(v1::ErrorResponse {
                error_code: status.code() as i32,
                error_message: status.message().to_owned(),
            })
        });
        v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }

    /// `name` and, after it, its transitive dependencies not yet in `sent`.
    fn files_from(
        &self,
        name: &str,
        sent: &mut BTreeSet<String>,
    ) -> Result<MessageResponse, Status> {
        if !self.files.contains_key(name) {
            return Err(Status::not_found(format!("file {name:?} not found")));
        }
        let mut encoded = Vec::new();
        let mut pending = vec![name.to_owned()];
        // The asked-for file is always sent, even when sent before.
        sent.remove(name);
        while let Some(next) = pending.pop() {
            let Some(file) = self.files.get(&next) else {
                continue;
            };
            if !sent.insert(next) {
                continue;
            }
            encoded.push(file.encoded.clone());
            pending.extend(file.dependencies.iter().rev().cloned());
        }
        Ok(MessageResponse::FileDescriptorResponse(
            v1::FileDescriptorResponse {
                file_descriptor_proto: encoded,
            },
        ))
    }
}

fn enum_names(scope: &str, enumeration: &EnumDescriptorProto, names: &mut Vec<String>) {
    let name = qualified(scope, enumeration.name());
    // Enum values are scoped like the enum itself, not inside it.
    for value in &enumeration.value {
        names.push(qualified(scope, value.name()));
    }
    names.push(name);
}

fn qualified(scope: &str, name: &str) -> String {
    match scope.is_empty() {
        true => name.to_owned(),
        false => format!("{scope}.{name}"),
    }
}

/// The reflection services, v1 and v1alpha, over one index.
#[derive(Clone, Debug)]
pub(crate) struct Reflection {
    index: Arc<Index>,
}

impl Reflection {
    /// Reflection over the given encoded `FileDescriptorSet`s, plus the
    /// standard services' own files.
    pub(crate) fn new(sets: &[&[u8]]) -> Result<Self, Error> {
        let standard = [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let all: Vec<&[u8]> = sets.iter().copied().chain(standard).collect();
        Ok(Reflection {
            index: Arc::new(Index::new(&all)?),
        })
    }

    pub(crate) fn v1(&self) -> v1::server_reflection_server::ServerReflectionServer<Self> {
        v1::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    pub(crate) fn v1alpha(
        &self,
    ) -> v1alpha::server_reflection_server::ServerReflectionServer<Self> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// Answers each request of `requests` in turn, until the client ends the
    /// stream (or it fails, which ends this one with its status); `to_v1`
    /// and `from_v1` convert the messages of the protocol's version.
    fn answers<Req, Resp>(
        &self,
        requests: Streaming<Req>,
        to_v1: fn(Req) -> Result<v1::ServerReflectionRequest, Status>,
        from_v1: fn(v1::ServerReflectionResponse) -> Result<Resp, Status>,
    ) -> Answers<Resp>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        let index = self.index.clone();
        let mut sent = BTreeSet::new();
        Box::pin(requests.map(move |request| from_v1(index.answer(to_v1(request?)?, &mut sent))))
    }
}

/// The responses of one reflection stream.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `message` as the type with the same wire format (v1alpha ↔ v1).
fn same_wire<From: prost::Message, To: prost::Message + Default>(
    message: From,
) -> Result<To, Status> {
    To::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection message conversion: {e}")))
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.answers(request.into_inner(), Ok, Ok)))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.answers(
            request.into_inner(),
            same_wire,
            same_wire,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(
        index: &Index,
        question: MessageRequest,
        sent: &mut BTreeSet<String>,
    ) -> MessageResponse {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        index
            .answer(request, sent)
            .message_response
            .expect("an answer")
    }

    fn file_names(response: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("not files: {response:?}");
        };
        (files.file_descriptor_proto.iter())
            .map(|f| {
                FileDescriptorProto::decode(f.as_slice())
                    .expect("a file")
                    .name()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn answers_symbols_with_their_file_and_unsent_dependencies() {
        let reflection = Reflection::new(&[]).expect("index");
        let index = &reflection.index;
        let mut sent = BTreeSet::new();
        let health = "grpc.health.v1.Health";
        let files = file_names(ask(
            index,
            MessageRequest::FileContainingSymbol(health.into()),
            &mut sent,
        ));
        assert_eq!(files, ["health.proto"]);
        let nested = "grpc.health.v1.HealthCheckResponse.ServingStatus";
        assert_eq!(
            file_names(ask(
                index,
                MessageRequest::FileContainingSymbol(nested.into()),
                &mut sent
            )),
            ["health.proto"],
            "asked again, a file is sent again"
        );
        let value = "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN";
        assert!(
            index.symbols.contains_key(value),
            "enum values are scoped beside their enum"
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_response_not_the_end() {
        let reflection = Reflection::new(&[]).expect("index");
        let mut sent = BTreeSet::new();
        let answer = ask(
            &reflection.index,
            MessageRequest::FileContainingSymbol("no.Such".into()),
            &mut sent,
        );
        let MessageResponse::ErrorResponse(error) = answer else {
            panic!("not an error response: {answer:?}");
        };
        assert_eq!(error.error_code, tonic::Code::NotFound as i32);
        assert!(
            error.error_message.contains("no.Such"),
            "{}",
            error.error_message
        );
        let MessageResponse::ListServicesResponse(list) = ask(
            &reflection.index,
            MessageRequest::ListServices(String::new()),
            &mut sent,
        ) else {
            panic!("not a list");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        assert!(
            names.contains(&"grpc.reflection.v1.ServerReflection"),
            "{names:?}"
        );
    }
}
