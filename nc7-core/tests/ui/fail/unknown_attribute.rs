use nc7_core::Incoming;

#[derive(Incoming)]
struct In {
    #[nc7(renam = "x")]
    a: f64,
}

fn main() {}
