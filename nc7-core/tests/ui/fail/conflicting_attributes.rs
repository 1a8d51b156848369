use nc7_core::Incoming;

#[derive(Incoming)]
struct In {
    #[nc7(rename = "x", rename = "y")]
    a: f64,
}

fn main() {}
