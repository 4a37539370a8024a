//! A service whose every method's input has `buf.validate` rules (but one),
//! served by Keel, for the tests: its handler counts the messages it sees,
//! so a test can tell that a bad request never reached it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tonic::{Request, Response, Status, Streaming};

/// The generated messages, checks, server and client.
#[allow(clippy::all, missing_docs)]
pub mod rules_v1 {
    include!("gen/rules.v1.rs");
}

use rules_v1::rules_server::Rules as RulesService;
use rules_v1::{Broken, Everything, Plain, Reply};

/// The handler: counts every message it is given.
#[derive(Clone, Debug, Default)]
pub struct Handler {
    /// Messages seen, over all calls.
    pub seen: Arc<AtomicU32>,
}

impl Handler {
    fn saw(&self) -> u32 {
        self.seen.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[tonic::async_trait]
impl RulesService for Handler {
    async fn check(&self, _: Request<Everything>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(Reply { seen: self.saw() }))
    }

    async fn check_many(
        &self,
        request: Request<Streaming<Everything>>,
    ) -> Result<Response<Reply>, Status> {
        let mut stream = request.into_inner();
        let mut seen = 0;
        while stream.message().await?.is_some() {
            seen = self.saw();
        }
        Ok(Response::new(Reply { seen }))
    }

    type CheckEachStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<Reply, Status>> + Send + 'static>>;

    async fn check_each(
        &self,
        request: Request<Streaming<Everything>>,
    ) -> Result<Response<Self::CheckEachStream>, Status> {
        let handler = self.clone();
        let replies = tokio_stream::StreamExt::map(request.into_inner(), move |message| {
            message.map(|_| Reply {
                seen: handler.saw(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn r#break(&self, _: Request<Broken>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(Reply { seen: self.saw() }))
    }

    async fn echo(&self, _: Request<Plain>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(Reply { seen: self.saw() }))
    }
}
