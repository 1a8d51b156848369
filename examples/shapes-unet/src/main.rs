//! `shapes-unet <command> project …`: nc7's command line with this example's nucleotides
//! (and the classifier's) linked in.

// Linking the library registers its nucleotides.
use shapes_unet as _;

fn main() -> std::process::ExitCode {
    nc7_core::cli::main()
}
