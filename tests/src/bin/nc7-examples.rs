//! nc7's command line with both examples' nucleotides linked in, as a project's own binary is:
//! the end-to-end tests run it as a separate process where the process itself is what is
//! tested (signals, output, exit codes, two commands at once).

use shapes_classifier as _;
use shapes_unet as _;

fn main() -> std::process::ExitCode {
    nc7_core::cli::main()
}
