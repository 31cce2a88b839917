fn main() -> std::process::ExitCode {
    mirror::cli::main()
}
