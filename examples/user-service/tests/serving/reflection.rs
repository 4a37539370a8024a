//! Server reflection, v1 and v1alpha.

use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn reflection_answers_an_unknown_symbol_on_the_stream_and_keeps_serving_it() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(timings(0, 1000)).await;
    let mut client = ServerReflectionClient::new(channel(server.addr).await);
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    // The first request goes in before the call is awaited: a server may
    // send its headers only with its first answer.
    requests
        .send(ask(MessageRequest::FileContainingSymbol(
            "no.such.Thing".into(),
        )))
        .await
        .unwrap();
    let mut replies = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let answer = replies.message().await.expect("a message, not a status");
    let Some(MessageResponse::ErrorResponse(error)) = answer.unwrap().message_response else {
        panic!("not an error_response");
    };
    assert_eq!(error.error_code, Code::NotFound as i32);
    assert!(error.error_message.contains("no.such.Thing"), "{error:?}");
    for question in [
        MessageRequest::FileByFilename("no/such.proto".into()),
        MessageRequest::FileContainingSymbol("user.v1.UserService.GetUser".into()),
    ] {
        requests.send(ask(question)).await.unwrap();
    }
    let answer = replies.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(&answer, Some(MessageResponse::ErrorResponse(e)) if e.error_code == Code::NotFound as i32),
        "{answer:?}"
    );
    let answer = replies.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer else {
        panic!("the stream still serves: {answer:?}");
    };
    let names: Vec<String> = (files.file_descriptor_proto.iter())
        .map(|f| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(f.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("user/v1/user.proto"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "keel/v1/options.proto"),
        "its imports come with it: {names:?}"
    );
    drop(requests);
    assert!(
        replies.message().await.unwrap().is_none(),
        "ends with the client's stream"
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_serve_descriptors_with_custom_options() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(timings(0, 1000)).await;
    let mut client = ServerReflectionClient::new(channel(server.addr).await);
    let ask = |request: MessageRequest| {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }])
    };
    let mut replies = client
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "user.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // Fetch the service's file, then its imports by name, as grpcurl does.
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(
        "user.v1.UserService".into(),
    )];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(request) = wanted.pop() {
        let mut replies = client
            .server_reflection_info(ask(request))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(found)) =
            replies.message().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptors");
        };
        for file in found.file_descriptor_proto {
            let proto =
                <prost_types::FileDescriptorProto as prost::Message>::decode(file.as_slice())
                    .unwrap();
            if seen.insert(proto.name().to_owned()) {
                wanted.extend(
                    proto
                        .dependency
                        .iter()
                        .map(|d| MessageRequest::FileByFilename(d.clone())),
                );
                files.push(file);
            }
        }
    }
    // Re-assemble a FileDescriptorSet (field 1, repeated bytes) and read the Keel option back.
    let mut set = Vec::new();
    for file in &files {
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    let pool =
        prost_reflect::DescriptorPool::decode(set.as_slice()).expect("the file and its imports");
    let method = pool
        .get_service_by_name("user.v1.UserService")
        .unwrap()
        .methods()
        .find(|m| m.name() == "HealthCheck")
        .unwrap();
    let ext = pool
        .get_extension_by_name("keel.v1.method")
        .expect("keel options file served");
    let options = method.options();
    assert!(options.has_extension(&ext), "custom option preserved");
    let keel_options = options.get_extension(&ext);
    let auth = keel_options
        .as_message()
        .unwrap()
        .get_field_by_name("auth")
        .unwrap();
    assert_eq!(
        auth.as_message()
            .unwrap()
            .get_field_by_name("public")
            .unwrap()
            .as_bool(),
        Some(true)
    );

    // grpc.reflection.v1alpha answers too.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut old =
        alpha::server_reflection_client::ServerReflectionClient::new(channel(server.addr).await);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = old
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        replies.message().await.unwrap().unwrap().message_response,
        Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
