use nc7_core::nucleotide;

#[nucleotide(kind = ModelPlugn)]
pub struct Net;

fn main() {}
