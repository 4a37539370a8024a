//! A service whose REST routes go wrong on request (`ticks.proto`), served
//! by Keel for the tests: a server stream that fails or panics after some
//! messages, a unary call slower than its deadline.

use std::pin::Pin;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

/// The generated messages, server and client.
#[allow(clippy::all, missing_docs)]
pub mod ticks_v1 {
    include!("gen/ticks.v1.rs");
}

use ticks_v1::ticker_server::Ticker;
use ticks_v1::{TickReply, TickRequest, WaitReply, WaitRequest};

/// The handler: does what each request asks.
#[derive(Clone, Debug, Default)]
pub struct Handler;

type Ticks = Pin<Box<dyn tokio_stream::Stream<Item = Result<TickReply, Status>> + Send>>;

#[tonic::async_trait]
impl Ticker for Handler {
    type TickStream = Ticks;

    async fn tick(&self, request: Request<TickRequest>) -> Result<Response<Ticks>, Status> {
        let TickRequest {
            count,
            interval_ms,
            fail_code,
            panic_after,
        } = request.into_inner();
        let ticks = ticks(count, interval_ms, fail_code, panic_after);
        Ok(Response::new(Box::pin(ticks)))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitReply>, Status> {
        let delay_ms = request.into_inner().delay_ms;
        tokio::time::sleep(Duration::from_millis(delay_ms.into())).await;
        Ok(Response::new(WaitReply {
            waited_ms: delay_ms,
        }))
    }
}

/// `count` ticks `interval_ms` apart, then the failure asked for.
fn ticks(
    count: u32,
    interval_ms: u32,
    fail_code: i32,
    panic_after: u32,
) -> impl tokio_stream::Stream<Item = Result<TickReply, Status>> {
    let interval = Duration::from_millis(interval_ms.into());
    futures_util::stream::unfold(0_u32, move |n| async move {
        if n > count {
            return None;
        }
        // Each tick after the first is worked on for `interval_ms`, and the
        // panic comes from that work, after an await: the ticks before it
        // were sent. (A panic in the very poll after a yield would lose that
        // tick: tonic's encoder buffers what one poll yields, and the panic
        // unwinds through it before the buffer is sent.)
        if n > 0 {
            tokio::time::sleep(interval).await;
        }
        if panic_after > 0 && n == panic_after {
            panic!("the handler's stream panicked after {n} ticks");
        }
        if n == count {
            return match Code::from_i32(fail_code) {
                Code::Ok => None,
                code => Some((
                    Err(Status::new(code, format!("failed after {n} ticks"))),
                    n + 1,
                )),
            };
        }
        Some((Ok(TickReply { n: n + 1 }), n + 1))
    })
}
