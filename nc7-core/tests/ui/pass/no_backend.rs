use nc7_core::{Incoming, Keys};

/// Keys that hold no tensors need no backend parameter.
#[derive(Incoming)]
struct Settings {
    threshold: f64,
    count: Option<i64>,
    flag: bool,
}

fn main() {
    assert_eq!(<Settings as Keys<burn::backend::NdArray>>::KEYS.len(), 3);
}
