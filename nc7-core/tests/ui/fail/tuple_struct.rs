use nc7_core::Generated;

#[derive(Generated)]
struct Pair(f64, f64);

fn main() {}
