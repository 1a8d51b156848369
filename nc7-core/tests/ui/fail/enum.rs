use nc7_core::Incoming;

#[derive(Incoming)]
enum NotAStruct {
    A,
}

fn main() {}
