use nc7_core::nucleotide;

#[nucleotide]
pub struct Net;

fn main() {}
