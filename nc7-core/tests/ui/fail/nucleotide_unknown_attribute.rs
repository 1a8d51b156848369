use nc7_core::nucleotide;

#[nucleotide(kind = ModelPlugin, kindd = ModelLoss)]
pub struct Net;

fn main() {}
