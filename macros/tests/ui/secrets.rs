use keel_rpc_macros::Section;

#[derive(Section)]
struct Bootstrap {
    admin_password: String,
    #[config(secret)]
    api_key: String,
    client_secret: Option<Vec<u8>>,
}

fn main() {}
