//! emma as the malloc of programs nobody on the team wrote: `libemma.so`
//! (the `emma-malloc` package in `examples/malloc/`, exporting `malloc`,
//! `free`, …, glibc's introspection functions and C++'s operators under
//! their plain names) is `LD_PRELOAD`ed into python3, a multi-threaded C++
//! program, gcc compiling a big file, and git, and their output must be
//! the same as with glibc's malloc. Further cases: every `EMMA_*` option at
//! once, statistics to a file from a program that closed stderr, glibc's
//! introspection functions checked against what a C program allocated, and
//! every form of C++'s `operator new`/`delete`.
//!
//! Proof that emma, not glibc, served the allocations: the library writes
//! one statistics line per process at exit with `EMMA_STATS=1` (heaps made,
//! bytes mapped, live bytes), which the tests parse; the python test also
//! asks the library, through ctypes, whether blocks python got from
//! `malloc` belong to emma.

#[path = "embed/util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use util::*;

/// `libemma.so`, built with this test's profile and features.
fn preload() -> PathBuf {
    libemma()
}

/// `cmd` with emma preloaded, default options, and its exit statistics
/// requested on stderr.
fn preloaded_defaults(mut cmd: Command) -> Command {
    cmd.env("LD_PRELOAD", preload()).env("EMMA_STATS", "1");
    cmd
}

/// Where `preloaded` has the statistics written (`%p`: the process id).
fn stats_dir() -> PathBuf {
    let d = embed_dir().join("stats");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cmd` with emma preloaded and every option set: the purge mode that is
/// not the default, purging at once (the most purge traffic), a limit the
/// programs stay under, statistics to stderr and to a file, verbose start.
fn preloaded(cmd: Command) -> Command {
    let mut cmd = preloaded_defaults(cmd);
    cmd.env("EMMA_PURGE", "free")
        .env("EMMA_PURGE_DELAY", "0")
        .env("EMMA_LIMIT", "8g")
        .env("EMMA_STATS_FILE", stats_dir().join("run.%p"))
        .env("EMMA_VERBOSE", "1");
    cmd
}

/// Checks that each process of a `preloaded` run wrote its statistics
/// line to its file too, and announced its options.
fn check_stats_files(stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    let lines = stats_lines(stderr);
    let starts = text.matches("emma: libemma.so loaded").count();
    assert!(starts >= lines.len(), "no verbose start-up line:\n{text}");
    for l in &lines {
        let file = stats_dir().join(format!("run.{}", l.pid));
        let written =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            written.contains(&format!("emma: pid={} ", l.pid)),
            "{}: {written}",
            file.display()
        );
    }
}

/// One `emma: pid=… live_bytes=… heaps=… mapped=… peak_mapped=…` line.
#[derive(Debug)]
struct StatsLine {
    pid: usize,
    live_bytes: usize,
    live_blocks: usize,
    heaps: usize,
    mapped: usize,
    peak_mapped: usize,
}

/// The statistics lines in a process tree's stderr (one per process).
fn stats_lines(stderr: &[u8]) -> Vec<StatsLine> {
    let field = |line: &str, name: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("emma: pid="))
        .map(|l| StatsLine {
            pid: field(l, "pid"),
            live_bytes: field(l, "live_bytes"),
            live_blocks: field(l, "live_blocks"),
            heaps: field(l, "heaps"),
            mapped: field(l, "mapped"),
            peak_mapped: field(l, "peak_mapped"),
        })
        .collect()
}

/// Runs `cmd` once plainly and once with emma preloaded; both must
/// succeed with the same stdout. Returns the preloaded run's output.
fn same_with_and_without(make: impl Fn() -> Command) -> Output {
    let mut plain = make();
    let expected = run_ok(&mut plain);
    let mut cmd = preloaded(make());
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "{cmd:?}: output differs with emma preloaded"
    );
    assert!(
        !stats_lines(&out.stderr).is_empty(),
        "{cmd:?}: no emma statistics line, was emma loaded?\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_stats_files(&out.stderr);
    out
}

/// The library exports the whole malloc family, glibc's introspection
/// functions, every C++ operator new/delete, and its three query
/// functions under their plain names; nothing else.
#[test]
fn preload_exports_the_malloc_family() {
    let out = run_ok(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(preload()),
    );
    let mut names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    names.sort();
    let mut want = vec![
        // C
        "aligned_alloc",
        "calloc",
        "free",
        "malloc",
        "malloc_usable_size",
        "memalign",
        "posix_memalign",
        "pvalloc",
        "realloc",
        "reallocarray",
        "valloc",
        // glibc introspection
        "mallinfo",
        "mallinfo2",
        "malloc_info",
        "malloc_stats",
        "malloc_trim",
        "mallopt",
        // emma's queries
        "emma_live_bytes",
        "emma_mapped",
        "emma_owns",
        // C++ new: plain, nothrow, aligned, aligned nothrow; scalar and array
        "_Znwm",
        "_Znam",
        "_ZnwmRKSt9nothrow_t",
        "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t",
        "_ZnamSt11align_val_tRKSt9nothrow_t",
        // C++ delete: plain, nothrow, sized, aligned, aligned nothrow,
        // sized aligned; scalar and array
        "_ZdlPv",
        "_ZdaPv",
        "_ZdlPvRKSt9nothrow_t",
        "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvm",
        "_ZdaPvm",
        "_ZdlPvSt11align_val_t",
        "_ZdaPvSt11align_val_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t",
        "_ZdaPvSt11align_val_tRKSt9nothrow_t",
        "_ZdlPvmSt11align_val_t",
        "_ZdaPvmSt11align_val_t",
    ];
    want.sort();
    assert_eq!(names, want, "nm -D --defined-only:\n{out}");
}

/// The C contract (tests/embed/c_contract.c), through the real `malloc`
/// symbols of a C program, including `errno`.
#[test]
fn preload_c_contract() {
    let exe = compile(
        "gcc",
        &["c_contract.c"],
        "c_contract",
        &[
            "-O1",
            "-fno-builtin",
            "-Wno-alloc-size-larger-than",
            "-DCHECK_ERRNO",
        ],
    );
    let mut cmd = preloaded_defaults(Command::new(&exe));
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("c_contract: OK"));
    let stats = stats_lines(&out.stderr);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert!(stats[0].mapped > 0 && stats[0].live_blocks > 0, "{stats:?}");
}

/// The real python3 binary (not a version manager's shell shim).
fn python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.exists().then_some(p)
}

/// python3 running an allocation-heavy script (json, sorting, growing
/// buffers, zlib, threads); python asks emma through ctypes whether its
/// malloc blocks are emma's.
#[test]
fn preload_python() {
    let py = python().expect("python3 is needed for this test");
    let script = root().join("tests/embed/alloc_heavy.py");
    let out = same_with_and_without(|| {
        let mut c = Command::new(&py);
        c.arg(&script).arg("--check-emma");
        c
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "emma: owns(malloc(100))=1 owns(id(100 kB bytes))=1 owns(id(big))=1 owns(stack)=0"
        ),
        "python's malloc blocks are not emma's:\n{err}"
    );
    let stats = stats_lines(&out.stderr);
    // The main thread and four worker threads, alive together.
    assert!(stats.iter().any(|s| s.heaps >= 5), "{stats:?}");
}

/// A C++ program: new/delete, strings, vectors, maps, shared_ptr, objects
/// built on one thread and deleted on another.
#[test]
fn preload_cpp_threads() {
    assert!(have("g++"), "g++ is needed for this test");
    let exe = compile(
        "g++",
        &["threads.cpp"],
        "threads_cpp",
        &["-O2", "-pthread", "-std=c++17"],
    );
    let out = same_with_and_without(|| {
        let mut c = Command::new(&exe);
        c.args(["4", "3000"]);
        c
    });
    let stats = stats_lines(&out.stderr);
    assert!(stats[0].heaps >= 5, "{stats:?}");
    assert!(stats[0].peak_mapped >= 8 << 20, "{stats:?}");
}

/// Writes a C file of `n` functions (about 1.9 KB of source each) whose
/// program prints one number.
fn big_c_file(path: &Path, n: usize) {
    use std::fmt::Write;
    let mut s = String::from("#include <stdio.h>\n");
    for i in 0..n {
        let _ = write!(
            s,
            r#"static unsigned long f{i}(unsigned long x) {{
    unsigned long a = x * {m}UL + {i};
    static const char *names[] = {{"alpha{i}", "beta{i}", "gamma{i}", "delta{i}"}};
    for (int k = 0; k < 4; k++) {{
        switch ((a >> k) & 7) {{
        case 0: a += names[k][0]; break;
        case 1: a ^= a << {s1}; break;
        case 2: a *= {s2}; break;
        case 3: a -= names[(k + 1) & 3][1]; break;
        case 4: a = (a >> 3) | (a << 61); break;
        default: a += k * {s3};
        }}
    }}
    return a ^ (a >> {s4});
}}
"#,
            m = 2 * i + 1,
            s1 = i % 13 + 1,
            s2 = i % 7 + 3,
            s3 = i % 11,
            s4 = i % 5 + 1
        );
    }
    s.push_str("int main(void) {\n    unsigned long x = 1;\n");
    for i in 0..n {
        let _ = writeln!(s, "    x = f{i}(x);");
    }
    s.push_str("    printf(\"%lu\\n\", x);\n    return 0;\n}\n");
    std::fs::write(path, s).unwrap();
}

/// gcc (the driver, cc1 and as, all preloaded) compiling a 1.3 MB C file
/// with -O2: the object file must be byte for byte the one glibc's malloc
/// gives, and the program must run.
#[test]
fn preload_gcc_big_compile() {
    let dir = embed_dir().join("gcc");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("big.c");
    big_c_file(&src, 700);
    let obj = |name: &str| dir.join(name);
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(obj("glibc.o")),
    );
    let mut cmd = preloaded(Command::new("gcc"));
    cmd.args(["-O2", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(obj("emma.o"));
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    check_stats_files(&out.stderr);
    let a = std::fs::read(obj("glibc.o")).unwrap();
    let b = std::fs::read(obj("emma.o")).unwrap();
    assert!(
        a == b,
        "gcc made a different object file with emma preloaded"
    );
    // cc1 is the process that allocates a lot: 29 MiB mapped at its peak
    // here (it was over 32 MiB before pages of big blocks were capped at
    // 128 KiB).
    let stats = stats_lines(&out.stderr);
    assert!(stats.len() >= 2, "one line per process expected: {stats:?}");
    assert!(
        stats.iter().any(|s| s.peak_mapped >= 16 << 20),
        "cc1 should have mapped tens of MiB: {stats:?}"
    );
    let exe = dir.join("big");
    run_ok(Command::new("gcc").arg(obj("emma.o")).arg("-o").arg(&exe));
    let printed = run_ok(&mut Command::new(&exe));
    assert!(printed.trim().parse::<u64>().is_ok(), "{printed}");
}

/// A `git fast-import` stream of `commits` commits touching 60 files.
fn fast_import_stream(commits: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::new();
    let mut files: Vec<Vec<String>> = vec![Vec::new(); 60];
    for c in 0..commits {
        let t = 1_700_000_000 + c * 60;
        let msg = format!("commit {c}\n");
        let _ = write!(
            s,
            "commit refs/heads/main\nmark :{}\nauthor Emma <emma@example.com> {t} +0000\n\
             committer Emma <emma@example.com> {t} +0000\ndata {}\n{msg}",
            c + 1,
            msg.len()
        );
        if c > 0 {
            let _ = writeln!(s, "from :{c}");
        }
        for k in 0..3 {
            let f = (c * 7 + k * 13) % 60;
            let lines = &mut files[f];
            lines.push(format!(
                "line {c} {k} {}",
                "abcdefghij".repeat((c + k) % 20)
            ));
            if lines.len() > 200 {
                lines.drain(..50);
            }
            let data = lines.join("\n") + "\n";
            let _ = write!(
                s,
                "M 644 inline dir{}/file{f}.txt\ndata {}\n{data}",
                f % 5,
                data.len()
            );
        }
    }
    s.into_bytes()
}

/// git, preloaded: builds a 400-commit repository with fast-import, logs
/// it, packs it with `git gc` (multi-threaded delta search) and checks it
/// with `git fsck`; every output must match the run with glibc's malloc.
#[test]
fn preload_git() {
    use std::io::Write;
    let base = embed_dir().join("git");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let stream = fast_import_stream(400);
    let git = |repo: &Path, args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(repo)
            .args(["-c", "gc.auto=0", "-c", "pack.threads=2"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", &base);
        c
    };
    let mut outputs: Vec<Vec<String>> = Vec::new();
    let mut heaps = 0;
    for (i, emma) in [false, true].into_iter().enumerate() {
        let repo = base.join(format!("repo{i}"));
        std::fs::create_dir_all(&repo).unwrap();
        let wrap = |c: Command| if emma { preloaded(c) } else { c };
        let mut got = Vec::new();
        let mut go = |args: &[&str], input: Option<&[u8]>| {
            let mut cmd = wrap(git(&repo, args));
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            if let Some(data) = input {
                stdin.write_all(data).unwrap();
            }
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            check_status(&cmd, &out);
            if emma {
                let stats = stats_lines(&out.stderr);
                assert!(!stats.is_empty(), "git {args:?}: no emma statistics");
                check_stats_files(&out.stderr);
                heaps = heaps.max(stats.iter().map(|s| s.heaps).max().unwrap());
            }
            got.push(String::from_utf8_lossy(&out.stdout).into_owned());
        };
        go(&["init", "-q", "-b", "main"], None);
        go(&["fast-import", "--quiet"], Some(&stream));
        go(&["log", "--stat", "--format=%H %s"], None);
        go(&["gc", "-q", "--aggressive"], None);
        go(&["fsck", "--full", "--strict"], None);
        go(&["log", "-p", "--reverse"], None);
        go(&["rev-list", "--count", "--objects", "--all"], None);
        outputs.push(got);
    }
    assert_eq!(outputs[0].len(), outputs[1].len());
    for (a, b) in outputs[0].iter().zip(&outputs[1]) {
        assert!(a == b, "git output differs with emma preloaded");
    }
    assert!(outputs[1][2].lines().count() > 400, "git log too short");
    // `git gc` packs with two threads.
    assert!(heaps >= 2, "no multi-threaded git process seen");
}

/// The introspection program, built once.
fn introspect() -> PathBuf {
    compile(
        "gcc",
        &["introspect.c"],
        "introspect",
        &["-O1", "-fno-builtin", "-Wall"],
    )
}

/// glibc's introspection functions answer with emma's figures: mallinfo2
/// and mallinfo follow 10 MiB of 1 KiB blocks and a huge block (within the
/// slack the program states), malloc_trim reports whether it released
/// memory, malloc_info writes emma's XML, mallopt takes the options that
/// map to emma's and refuses glibc's, malloc_stats prints emma's table.
#[test]
fn preload_introspection() {
    let mut cmd = preloaded_defaults(Command::new(introspect()));
    cmd.arg("all");
    if cfg!(feature = "hardened") {
        // Each request carries 12 bytes of canary and size: a 1 KiB
        // request takes the next class's block (1280 bytes).
        cmd.env("INTROSPECT_BLOCK", "1280");
    }
    let out = run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    check_status(&cmd, &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("introspect: OK"),
        "{err}"
    );
    assert!(
        err.contains("emma instance libemma.so\n  live "),
        "no malloc_stats table:\n{err}"
    );
    assert_eq!(stats_lines(&out.stderr).len(), 1, "{err}");
}

/// Every option at once, on a program that checks the limit: the limit
/// refuses a 300 MiB block with ENOMEM, the start-up line shows each
/// option in force, an unknown `EMMA_*` variable is warned about, and the
/// statistics reach both stderr and the file.
#[test]
fn preload_every_option_at_once() {
    let mut cmd = preloaded(Command::new(introspect()));
    cmd.args(["limit", "300"])
        .env("EMMA_LIMIT", "256m")
        .env("EMMA_NOT_AN_OPTION", "1");
    let out = run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    check_status(&cmd, &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("introspect: OK"));
    let file = stats_dir().join("run.%p");
    let start = format!(
        "purge MADV_FREE after 0 ms, limit {} bytes, stats at exit: stderr yes, file {}\n",
        256 << 20,
        file.display()
    );
    assert!(err.contains(&start), "expected {start:?} in\n{err}");
    assert!(
        err.contains("emma: EMMA_NOT_AN_OPTION=1: unknown variable, ignored"),
        "{err}"
    );
    let stats = stats_lines(&out.stderr);
    assert_eq!(stats.len(), 1, "{err}");
    assert!(
        err.contains(" failures=1\n"),
        "the refusal is counted:\n{err}"
    );
    check_stats_files(&out.stderr);

    // Values that cannot be used are warned about even without verbose
    // mode (unknown variables are not), and ignored.
    let mut cmd = preloaded_defaults(Command::new(introspect()));
    cmd.args(["limit", "300"])
        .env("EMMA_LIMIT", "lots")
        .env("EMMA_PURGE", "sometimes")
        .env("EMMA_NOT_AN_OPTION", "1");
    let out = run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no limit should be in force:\n{err}");
    for w in [
        "emma: EMMA_LIMIT=lots: value not understood, ignored",
        "emma: EMMA_PURGE=sometimes: value not understood, ignored",
    ] {
        assert!(err.contains(w), "no {w:?} in\n{err}");
    }
    assert!(!err.contains("EMMA_NOT_AN_OPTION"), "{err}");
}

/// Programs that close stderr before exiting (coreutils do) still report,
/// through `EMMA_STATS_FILE`: a C program that closes fd 2, and `ls`.
#[test]
fn preload_stats_file_when_stderr_is_closed() {
    let dir = stats_dir();
    for (name, mut cmd) in [
        ("closer", Command::new(introspect())),
        ("ls", Command::new("ls")),
    ] {
        let pattern = dir.join(format!("{name}.%p"));
        cmd.arg(if name == "ls" { "/" } else { "close-stderr" })
            .env("LD_PRELOAD", preload())
            .env("EMMA_STATS", "1")
            .env("EMMA_STATS_FILE", &pattern)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        check_status(&cmd, &out);
        let file = dir.join(format!("{name}.{pid}"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stats = stats_lines(text.as_bytes());
        assert_eq!(stats.len(), 1, "{text}");
        assert_eq!(stats[0].pid, pid as usize);
        if name == "closer" {
            // The program leaked 1000 blocks of 100 bytes (112 usable).
            assert!(
                stats[0].live_blocks >= 1000 && stats[0].live_bytes >= 112_000,
                "{stats:?}"
            );
        }
    }
}

/// Every form of C++'s operator new and delete resolves to libemma.so and
/// works (alignment, nothrow null on failure); the throwing form aborts
/// with a message when memory runs out.
#[test]
fn preload_cxx_operators() {
    assert!(have("g++"), "g++ is needed for this test");
    let exe = compile(
        "g++",
        &["cxx_ops.cpp"],
        "cxx_ops",
        &["-O1", "-std=c++17", "-Wall", "-ldl"],
    );
    let mut cmd = preloaded_defaults(Command::new(&exe));
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cxx_ops: OK"));

    let mut cmd = preloaded_defaults(Command::new(&exe));
    cmd.arg("oom");
    let out = run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(6), "SIGABRT expected:\n{err}");
    assert!(
        err.contains(&format!(
            "emma: out of memory in operator new ({} bytes)",
            usize::MAX / 2
        )),
        "{err}"
    );
}
