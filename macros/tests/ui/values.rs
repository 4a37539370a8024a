use std::time::Duration;

use keel_rpc_macros::Section;

#[derive(Section)]
struct Server {
    #[config(default = "5 parsecs")]
    lame_duck: Duration,
    #[config(default = 5)]
    drain: Duration,
    #[config(max = "1h")]
    name: String,
    #[config(min = "1")]
    max_connections: u32,
    #[config(min = 1, above = 0)]
    streams: u32,
    #[config(default = true)]
    host: String,
}

fn main() {}
