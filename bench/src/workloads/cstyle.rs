//! Workloads shaped like C programs: many short-lived small objects of assorted sizes reached
//! through pointers (arbitrary-precision arithmetic, trees), and threads that free each other's
//! blocks. They run in both modes; in the C mode (`LD_PRELOAD`) every allocation is a `malloc`
//! and every free a `free` without a size, as in C.

use super::{mix, scaled};
use crate::rng::Rng;
use std::sync::mpsc;
use std::thread;

/// A number of up to `LIMBS_MAX` 64-bit limbs, little-endian, in a heap buffer of its own (as
/// GMP-style libraries keep them).
type Big = Box<[u64]>;

const LIMBS_MAX: usize = 48;

/// `a + b` (truncated to `LIMBS_MAX` limbs) in a new buffer.
fn add(a: &[u64], b: &[u64]) -> Big {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity((n + 1).min(LIMBS_MAX));
    let mut carry = 0u64;
    for i in 0..n {
        let (x, c1) = a.get(i).copied().unwrap_or(0).overflowing_add(carry);
        let (y, c2) = x.overflowing_add(b.get(i).copied().unwrap_or(0));
        out.push(y);
        carry = u64::from(c1) + u64::from(c2);
    }
    if carry != 0 && n < LIMBS_MAX {
        out.push(carry);
    }
    out.into_boxed_slice()
}

/// `a * b` (schoolbook, truncated to `LIMBS_MAX` limbs) in a new buffer, via a temporary.
fn mul(a: &[u64], b: &[u64]) -> Big {
    let n = (a.len() + b.len()).min(LIMBS_MAX);
    let mut acc = vec![0u64; n];
    for (i, &x) in a.iter().enumerate() {
        let mut carry = 0u128;
        for (j, &y) in b.iter().enumerate() {
            if i + j >= n {
                break;
            }
            let t = u128::from(x) * u128::from(y) + u128::from(acc[i + j]) + carry;
            acc[i + j] = t as u64;
            carry = t >> 64;
        }
    }
    while acc.len() > 1 && acc.last() == Some(&0) {
        acc.pop();
    }
    acc.into_boxed_slice()
}

/// Arbitrary-precision arithmetic: a pool of 4000 numbers of 1–48 limbs (8–384 bytes); each
/// step reads two numbers through their pointers, computes a sum or a product into a new
/// buffer (products through a temporary) and replaces a random number with it. Allocation
/// sizes vary with every result, lifetimes are short and random.
pub fn bignum(scale: f64) -> u64 {
    const POOL: usize = 4000;
    let steps = scaled(1_000_000, scale);
    let mut rng = Rng::new(21);
    let mut pool: Vec<Big> = (0..POOL)
        .map(|_| (0..rng.range(1, 8)).map(|_| rng.next_u64()).collect())
        .collect();
    let mut sum = 0u64;
    for _ in 0..steps {
        let (i, j) = (rng.below(POOL), rng.below(POOL));
        let r = if rng.one_in(4) {
            mul(
                &pool[i][..pool[i].len().min(12)],
                &pool[j][..pool[j].len().min(12)],
            )
        } else {
            add(&pool[i], &pool[j])
        };
        // Keep sizes spread: numbers that grew to the cap restart small.
        let r = if r.len() >= LIMBS_MAX - 1 {
            r[..rng.range(1, 8)].into()
        } else {
            r
        };
        sum = mix(sum, r[0] ^ r.len() as u64);
        pool[rng.below(POOL)] = r;
    }
    pool.iter().fold(sum, |s, b| mix(s, b[b.len() - 1]))
}

/// A binary-tree node with a payload of its own, as a C program would `malloc` them.
struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
    payload: Box<[u8]>,
}

fn build(rng: &mut Rng, depth: u32) -> Option<Box<Node>> {
    (depth > 0).then(|| {
        let len = rng.range(8, 120);
        Box::new(Node {
            left: build(rng, depth - 1),
            right: build(rng, depth - 1),
            payload: vec![depth as u8; len].into_boxed_slice(),
        })
    })
}

/// Walks the tree (pointer chasing) and returns a digest of it.
fn walk(n: &Option<Box<Node>>) -> u64 {
    match n {
        None => 1,
        Some(n) => {
            let p = &n.payload;
            mix(walk(&n.left), walk(&n.right)) ^ (p.len() as u64) << 8 ^ u64::from(p[p.len() - 1])
        }
    }
}

/// Trees, binary-trees style: a long-lived tree of depth 16 stays while many short-lived trees
/// of depth 4–12 are built, walked twice and dropped. Each node is two allocations (the node
/// and its 8–120 byte payload), and every read goes through a pointer.
pub fn trees(scale: f64) -> u64 {
    let rounds = scaled(150, scale);
    let mut rng = Rng::new(31);
    let long_lived = build(&mut rng, 16);
    let mut sum = walk(&long_lived);
    for r in 0..rounds {
        let depth = 4 + (r % 9) as u32;
        for _ in 0..(1 << (12 - depth.min(12))).max(1) {
            let t = build(&mut rng, depth);
            sum = mix(sum, walk(&t));
            sum = mix(sum, walk(&t));
        }
    }
    mix(sum, walk(&long_lived))
}

/// Two threads each allocate batches of small blocks (16–512 bytes, filled), send them to the
/// other and free the batches they receive: every block is freed by the thread that did not
/// allocate it, in both directions at once.
pub fn exchange(scale: f64) -> u64 {
    const BATCH: usize = 256;
    let batches = scaled(15_000, scale);
    let (tx_a, rx_a) = mpsc::sync_channel::<Vec<Box<[u8]>>>(8);
    let (tx_b, rx_b) = mpsc::sync_channel::<Vec<Box<[u8]>>>(8);
    let side = move |seed: u64, tx: mpsc::SyncSender<Vec<Box<[u8]>>>, rx: mpsc::Receiver<_>| {
        move || {
            let mut rng = Rng::new(seed);
            let mut sum = 0u64;
            for b in 0..batches {
                let batch: Vec<Box<[u8]>> = (0..BATCH)
                    .map(|_| vec![b as u8; rng.range(16, 512)].into_boxed_slice())
                    .collect();
                tx.send(batch).unwrap();
                let theirs: Vec<Box<[u8]>> = rx.recv().unwrap();
                for m in &theirs {
                    sum = sum.wrapping_add(m.len() as u64 ^ u64::from(m[m.len() - 1]));
                }
            }
            sum
        }
    };
    let a = thread::spawn(side(41, tx_a, rx_b));
    let b = thread::spawn(side(42, tx_b, rx_a));
    a.join().unwrap().wrapping_add(b.join().unwrap())
}
