use nc7_core::Incoming;

#[derive(Incoming)]
struct In {
    a: f64,
    #[nc7(rename = "a")]
    b: f64,
}

fn main() {}
