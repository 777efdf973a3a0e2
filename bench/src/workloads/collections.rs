//! An ordinary Rust program's allocation mix: many short Strings, Vec growth, hash-map and
//! B-tree nodes, `format!` and `join` temporaries.

use super::{mix, scaled};
use crate::rng::Rng;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::BuildHasherDefault;

/// SipHash with fixed keys: std's default `RandomState` would make iteration order (and so the
/// checksum) differ from run to run.
type Fixed = BuildHasherDefault<DefaultHasher>;

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "wen", "dor", "el", "an", "th", "qu", "ist",
    "ber", "ox", "ph", "ing", "ly",
];

/// A pseudo-word of 1–5 syllables; a skewed choice so some words repeat often, like text.
fn word(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5).min(rng.below(5));
    let mut w = String::new();
    for _ in 0..n {
        // The minimum of two draws favours early syllables: a Zipf-ish vocabulary.
        let i = rng.below(SYLLABLES.len()).min(rng.below(SYLLABLES.len()));
        w.push_str(SYLLABLES[i]);
    }
    w
}

/// Word counting, inverted indexes, sorting and report formatting over a fresh random "text"
/// every round.
pub fn collections(scale: f64) -> u64 {
    const WORDS: usize = 40_000;
    let rounds = scaled(120, scale);
    let mut rng = Rng::new(4);
    let mut sum = 0u64;
    for _ in 0..rounds {
        let text: Vec<String> = (0..WORDS).map(|_| word(&mut rng)).collect();

        // Frequency count: one String key allocated per distinct word.
        let mut counts: HashMap<String, u32, Fixed> = HashMap::default();
        for w in &text {
            *counts.entry(w.clone()).or_default() += 1;
        }

        // Positions of each word: a Vec per key growing one element at a time.
        let mut positions: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, w) in text.iter().enumerate() {
            positions.entry(w.as_str()).or_default().push(i as u32);
        }

        // Words grouped by frequency, each group sorted.
        let mut by_freq: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (w, c) in counts.drain() {
            by_freq.entry(c).or_default().push(w);
        }
        for group in by_freq.values_mut() {
            group.sort_unstable();
        }

        // A report: format! and join make and drop many temporaries.
        let mut report = String::new();
        for (c, group) in by_freq.iter().rev().take(200) {
            let line = format!("{c:>6}: {}", group.join(", "));
            writeln!(report, "{}", &line[..line.len().min(120)]).unwrap();
        }

        // Bigrams: short-lived owned Strings as keys, most of them freed when the map drops.
        let mut bigrams: HashMap<String, usize, Fixed> = HashMap::default();
        for pair in text.windows(2).step_by(3) {
            let key = format!("{} {}", pair[0], pair[1]);
            *bigrams.entry(key).or_default() += pair[0].len();
        }
        let mut top: Vec<(&String, &usize)> = bigrams.iter().collect();
        top.sort_unstable_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));

        for b in report.bytes() {
            sum = mix(sum, u64::from(b));
        }
        for (k, v) in top.iter().take(50) {
            sum = mix(sum, k.len() as u64 ^ **v as u64);
        }
        for (w, p) in positions.iter().step_by(7) {
            sum = mix(sum, w.len() as u64 ^ u64::from(p[p.len() / 2]));
        }
    }
    sum
}
