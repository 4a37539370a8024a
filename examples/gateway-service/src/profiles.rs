//! The `ProfileService` handler: profiles read from user-service.

use keel_rpc::RequestExt;
use keel_rpc::auth::StaticToken;
use keel_rpc::client::{Client, Transport};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use user_service::user_v1::{self, GetUserRequest};

use crate::Upstream;
use crate::gateway_v1::profile_service_server::ProfileService;
use crate::gateway_v1::{GetProfileRequest, Profile};

/// Answers `GetProfile` by calling user-service's `GetUser` as the caller.
///
/// The caller's identity is forwarded as its own bearer token: every request
/// derives a client with a [`StaticToken`] of the incoming token, which is
/// cheap (the channel and the client metrics are shared). user-service then
/// checks the caller's scopes itself.
#[derive(Clone, Debug)]
pub struct Profiles {
    client: Client,
    user_service: Transport,
}

impl Profiles {
    /// A handler calling user-service at `upstream.user_service` (connected
    /// lazily, on the first call) with `client`'s layer.
    pub fn new(client: Client, upstream: &Upstream) -> Result<Self, keel_rpc::Error> {
        let user_service = client.connect(upstream.user_service.as_str())?;
        Ok(Profiles {
            client,
            user_service,
        })
    }
}

#[tonic::async_trait]
impl ProfileService for Profiles {
    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let token = forwarded_token(request.metadata())?;
        let caller = request.claims().map(|c| c.sub.clone()).unwrap_or_default();
        let user_id = request.into_inner().user_id;
        if user_id.is_empty() {
            return Err(Status::invalid_argument("user_id is required"));
        }
        tracing::info!(%caller, %user_id, "reading the user from user-service");
        let client = self.client.with_token_source(token);
        let mut users = user_v1::connect_user_service(self.user_service.clone(), &client)
            .map_err(|e| Status::internal(format!("user-service client: {e}")))?;
        let user = users
            .get_user(GetUserRequest { id: user_id })
            .await
            .map_err(upstream_status)?
            .into_inner();
        Ok(Response::new(Profile {
            user_id: user.id,
            display_name: user.name,
            email: user.email,
            member_since: user.created_at,
        }))
    }
}

/// The caller's bearer token, to call user-service as the caller. Keel's auth
/// layer has verified it before the handler runs.
fn forwarded_token(metadata: &MetadataMap) -> Result<StaticToken, Status> {
    let value = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(StaticToken::new(token.trim()))
        }
        _ => Err(Status::unauthenticated(
            "authorization header must use the Bearer scheme",
        )),
    }
}

/// What the gateway's caller gets when user-service fails: the caller's own
/// mistakes as they are, user-service's failures as `UNAVAILABLE`.
fn upstream_status(status: Status) -> Status {
    match status.code() {
        Code::NotFound
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::DeadlineExceeded => status,
        code => Status::unavailable(format!("user-service: {code:?}: {}", status.message())),
    }
}
