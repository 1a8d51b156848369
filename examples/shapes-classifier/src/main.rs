//! `shapes-classifier <command> project …`: nc7's command line with this example's
//! nucleotides linked in.

// Linking the library registers its nucleotides.
use shapes_classifier as _;

fn main() -> std::process::ExitCode {
    nc7_core::cli::main()
}
