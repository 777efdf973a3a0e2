//! emma as the malloc of programs nobody on the team wrote: the `preload`
//! example (`examples/preload.rs`, exporting `malloc`, `free`, … under
//! their plain names) is `LD_PRELOAD`ed into python3, a multi-threaded
//! C++ program, gcc compiling a big file, and git, and their output must
//! be the same as with glibc's malloc.
//!
//! Proof that emma, not glibc, served the allocations: the library prints
//! one statistics line per process at exit when `EMMA_PRELOAD_STATS=1`
//! (heaps made, bytes mapped), which the tests parse; the python test also
//! asks the library, through ctypes, whether blocks python got from
//! `malloc` belong to emma.

#[path = "embed/util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use util::*;

/// The preload library, built with this test's profile and features.
fn preload() -> PathBuf {
    example_cdylib("preload")
}

/// `cmd` with emma preloaded and its exit statistics requested.
fn preloaded(mut cmd: Command) -> Command {
    cmd.env("LD_PRELOAD", preload())
        .env("EMMA_PRELOAD_STATS", "1");
    cmd
}

/// One `emma-preload: pid=… heaps=… mapped=… peak_mapped=…` line.
#[derive(Debug)]
struct StatsLine {
    heaps: usize,
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
        .filter(|l| l.starts_with("emma-preload: "))
        .map(|l| StatsLine {
            heaps: field(l, "heaps"),
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
    out
}

/// The library exports the whole malloc family under the plain names,
/// and its two query functions; nothing else.
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
        "aligned_alloc",
        "calloc",
        "emma_preload_mapped",
        "emma_preload_owns",
        "free",
        "malloc",
        "malloc_usable_size",
        "memalign",
        "posix_memalign",
        "pvalloc",
        "realloc",
        "reallocarray",
        "valloc",
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
    let mut cmd = preloaded(Command::new(&exe));
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("c_contract: OK"));
    assert_eq!(stats_lines(&out.stderr).len(), 1);
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
    let a = std::fs::read(obj("glibc.o")).unwrap();
    let b = std::fs::read(obj("emma.o")).unwrap();
    assert!(
        a == b,
        "gcc made a different object file with emma preloaded"
    );
    // cc1 is the process that allocates a lot.
    let stats = stats_lines(&out.stderr);
    assert!(stats.len() >= 2, "one line per process expected: {stats:?}");
    assert!(
        stats.iter().any(|s| s.peak_mapped >= 32 << 20),
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
