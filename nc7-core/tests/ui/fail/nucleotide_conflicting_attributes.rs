use nc7_core::nucleotide;

#[nucleotide(kind = ModelPlugin, name = "A", name = "B")]
pub struct Net;

fn main() {}
