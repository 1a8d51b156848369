use nc7_core::Generated;

#[derive(Generated)]
struct Out {
    table: std::collections::HashMap<String, u8>,
}

fn main() {}
