use nc7_core::Generated;

#[derive(Generated)]
#[nc7(rename = "x")]
struct Out {
    a: f64,
}

fn main() {}
