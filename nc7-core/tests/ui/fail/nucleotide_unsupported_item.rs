use nc7_core::nucleotide;

#[nucleotide(kind = ModelPlugin)]
fn net() {}

fn main() {}
