use nc7_core::Incoming;

#[derive(Incoming)]
struct In {
    #[nc7(rename = "a:b")]
    a: f64,
}

fn main() {}
