use nc7_core::Incoming;

#[derive(Incoming)]
struct In {
    #[nc7(unknown)]
    a: f64,
    #[nc7(rename = "")]
    b: f64,
    #[nc7(rename = "a")]
    c: f64,
}

fn main() {}
