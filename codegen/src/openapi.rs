//! An OpenAPI 3.1 document per service with HTTP routes, from the same
//! annotations the server uses: paths and parameters from `google.api.http`,
//! request and response schemas in the proto3 JSON mapping, the Keel auth
//! rule as a bearer security requirement with its scopes (none for public
//! methods), the `google.rpc.Status` error, and the proto comments as
//! descriptions.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, ServiceDescriptor};
use serde_json::{Map, Value, json};

use crate::http::{HttpRoute, Segment};
use crate::spec::{Access, ServiceSpec};

/// The document of `service`, or `None` when none of its methods has a route.
pub(crate) fn document(service: &ServiceDescriptor, spec: &ServiceSpec) -> Option<Value> {
    if spec.methods.iter().all(|m| m.http.is_empty()) {
        return None;
    }
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (method, spec) in service.methods().zip(&spec.methods) {
        for (i, route) in spec.http.iter().enumerate() {
            let input = method.input();
            let output = method.output();
            let mut parameters = Vec::new();
            let mut bound = Vec::new();
            for variable in route.path.variables() {
                bound.push(variable.to_owned());
                let schema = field_at(&input, variable)
                    .map(|f| schemas.field(&f))
                    .unwrap_or_else(|| json!({ "type": "string" }));
                parameters.push(json!({
                    "name": variable,
                    "in": "path",
                    "required": true,
                    "schema": schema,
                }));
            }
            if route.body.as_deref() != Some("*") {
                for field in input.fields() {
                    let scalar = !matches!(field.kind(), Kind::Message(_)) && !field.is_map();
                    if scalar
                        && !bound.iter().any(|b| b == field.name())
                        && route.body.as_deref() != Some(field.name())
                    {
                        parameters.push(json!({
                            "name": field.json_name(),
                            "in": "query",
                            "schema": schemas.field(&field),
                        }));
                    }
                }
            }
            // The call's deadline, as the server reads it (a field named
            // `timeout` takes the query parameter's place).
            parameters.push(timeout_parameter("header"));
            if input.get_field_by_name("timeout").is_none() {
                parameters.push(timeout_parameter("query"));
            }
            let mut operation = Map::new();
            let comment = comment(&method.parent_file(), method.path());
            let comment = comment.as_str();
            operation.insert(
                "operationId".into(),
                json!(match i {
                    0 => format!("{}_{}", service.name(), method.name()),
                    n => format!("{}_{}_{n}", service.name(), method.name()),
                }),
            );
            if !comment.is_empty() {
                operation.insert("description".into(), json!(comment));
            }
            if !parameters.is_empty() {
                operation.insert("parameters".into(), Value::Array(parameters));
            }
            if let Some(body) = &route.body {
                let schema = match body.as_str() {
                    "*" => schemas.message(&input),
                    field => input
                        .get_field_by_name(field)
                        .map(|f| schemas.field(&f))
                        .unwrap_or_else(|| json!({})),
                };
                operation.insert(
                    "requestBody".into(),
                    json!({ "required": true, "content": { "application/json": { "schema": schema } } }),
                );
            }
            let answer = match &route.response_body {
                Some(field) => output
                    .get_field_by_name(field)
                    .map(|f| schemas.field(&f))
                    .unwrap_or_else(|| json!({})),
                None => schemas.message(&output),
            };
            let content = match spec.server_streaming {
                false => json!({ "application/json": { "schema": answer } }),
                true => json!({
                    "application/x-ndjson": { "schema": {
                        "type": "object",
                        "properties": { "result": answer, "error": { "$ref": STATUS_REF } },
                    } },
                    "text/event-stream": { "schema": { "type": "string" } },
                }),
            };
            operation.insert(
                "responses".into(),
                json!({
                    "200": { "description": "OK", "content": content },
                    "default": {
                        "description": "The call failed: a google.rpc.Status, with the HTTP status of its code.",
                        "content": { "application/json": { "schema": { "$ref": STATUS_REF } } },
                    },
                }),
            );
            operation.insert("security".into(), security(&spec.access));
            paths
                .entry(openapi_path(route))
                .or_default()
                .insert(route.method.to_ascii_lowercase(), Value::Object(operation));
        }
    }
    let mut components = schemas.done();
    components.insert(
        "google.rpc.Status".into(),
        json!({
            "type": "object",
            "description": "The status of a failed call (`google.rpc.Status` in the JSON mapping).",
            "properties": {
                "code": { "type": "integer", "format": "int32", "description": "The gRPC code." },
                "message": { "type": "string" },
                "details": { "type": "array", "items": { "type": "object" } },
            },
        }),
    );
    let description = comment(&service.parent_file(), service.path());
    let mut info = json!({ "title": service.full_name(), "version": service.package_name() });
    if !description.is_empty() {
        info["description"] = json!(description);
    }
    Some(json!({
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "mtls": { "type": "mutualTLS" },
            },
        },
    }))
}

const STATUS_REF: &str = "#/components/schemas/google.rpc.Status";

/// The leading comment of the element at `path` of `file`, trimmed.
fn comment(file: &FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.as_deref())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The route's path as OpenAPI writes it: each variable as `{field}`.
fn openapi_path(route: &HttpRoute) -> String {
    let mut path = String::new();
    for segment in &route.path.segments {
        path.push('/');
        match segment {
            Segment::Variable { field, .. } => path.push_str(&format!("{{{field}}}")),
            other => path.push_str(&other.to_string()),
        }
    }
    if let Some(verb) = &route.path.verb {
        path.push(':');
        path.push_str(verb);
    }
    path
}

/// Who may call: none for a public method, else the bearer token with the
/// rule's scopes (a peer rule needs a client certificate, which OpenAPI
/// describes as mutual TLS).
fn security(access: &Access) -> Value {
    match access {
        Access::Public => json!([]),
        Access::Token(scopes) => json!([{ "bearer": scopes }]),
        Access::Peer { scopes, .. } if scopes.is_empty() => json!([{ "mtls": [] }]),
        Access::Peer { scopes, .. } => json!([{ "mtls": [], "bearer": scopes }]),
    }
}

/// The field at a dotted path of `message`.
fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut message = message.clone();
    let mut found = None;
    for part in path.split('.') {
        let field = message.get_field_by_name(part)?;
        if let Kind::Message(inner) = field.kind() {
            message = inner;
        }
        found = Some(field);
    }
    found
}

/// The schemas of the messages and enums the document uses, by full name.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn done(self) -> Map<String, Value> {
        self.done.into_iter().collect()
    }

    /// A reference to `message`'s schema (written on first use), or the
    /// JSON mapping's own form of a well-known type.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        let name = message.full_name().to_owned();
        if !self.done.contains_key(&name) {
            // Placed first, so a recursive message refers to itself.
            self.done.insert(name.clone(), json!({}));
            let mut properties = Map::new();
            for field in message.fields() {
                properties.insert(field.json_name().to_owned(), self.field(&field));
            }
            let mut schema = json!({ "type": "object", "properties": properties });
            let comment = comment(&message.parent_file(), message.path());
            if !comment.is_empty() {
                schema["description"] = json!(comment);
            }
            self.done.insert(name.clone(), schema);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({ "type": "object" });
            };
            let value = self.single(&entry.map_entry_value_field());
            return json!({ "type": "object", "additionalProperties": value });
        }
        let single = self.single(field);
        let mut schema = match field.is_list() {
            true => json!({ "type": "array", "items": single }),
            false => single,
        };
        let comment = comment(&field.parent_file(), field.path());
        if !comment.is_empty() && schema.get("$ref").is_none() {
            schema["description"] = json!(comment);
        }
        schema
    }

    /// One value of `field` (an item, for a repeated field).
    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double | Kind::Float => json!({ "type": "number" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0 })
            }
            // 64-bit integers are strings in the JSON mapping.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "format": "int64" })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Kind::Enum(descriptor) => {
                let names: Vec<String> = descriptor.values().map(|v| v.name().to_owned()).collect();
                json!({ "type": "string", "enum": names })
            }
            Kind::Message(message) => self.message(&message),
        }
    }
}

/// The JSON mapping's special forms of the well-known types.
fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" })
        }
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.Any" => {
            json!({ "type": "object", "properties": { "@type": { "type": "string" } } })
        }
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => json!({ "type": "string" }),
        "google.protobuf.BoolValue" => json!({ "type": "boolean" }),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": "integer" })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => json!({ "type": "string" }),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({ "type": "number" }),
        _ => return None,
    })
}

/// The `timeout` parameter of every operation, `in` a header or the query.
fn timeout_parameter(location: &str) -> Value {
    json!({
        "name": "timeout",
        "in": location,
        "description": "The call's deadline: seconds, or a number with a unit (`500ms`, `1.5s`, \
                        `2m`). Past it the call ends DEADLINE_EXCEEDED (504).",
        "schema": { "type": "string", "pattern": "^[0-9.]+(ns|us|µs|ms|s|m|h)?$" },
    })
}
