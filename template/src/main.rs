use {{crate_name}} as _;

fn main() -> std::process::ExitCode {
    nc7_core::cli::main()
}
