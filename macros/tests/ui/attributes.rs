use std::time::Duration;

use keel_rpc_macros::Section;

#[derive(Section)]
#[config(validat = Self::check)]
struct Server {
    #[config(defualt = 5)]
    max_connections: u32,
    #[config(default = 1, default = 2)]
    max_streams: u32,
    #[config(required, default = "5s")]
    lame_duck: Duration,
    #[config(section, min = 1)]
    tls: Tls,
}

#[derive(Section)]
struct Tls {}

fn main() {}
