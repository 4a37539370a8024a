use keel_rpc_macros::Section;

#[derive(Section)]
struct Pair(u32, u32);

#[derive(Section)]
enum Mode {
    Fast,
}

fn main() {}
