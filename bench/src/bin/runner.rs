//! Builds one `workload` binary per allocator, runs the suite and writes the report.
//! Usually started by `bench/run.sh`; `runner --help` lists the options.

fn main() -> std::process::ExitCode {
    emma_bench::runner::main()
}
