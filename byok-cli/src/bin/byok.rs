//! The `byok` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    byok_cli::main()
}
