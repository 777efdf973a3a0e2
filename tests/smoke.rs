use emma::InstanceExt;
emma::emma_instance!(Global);
#[global_allocator]
static G: Global = Global::new();

#[test]
fn smoke() {
    let mut v = Vec::new();
    for i in 0..100_000u64 {
        v.push(Box::new(i));
    }
    let s: u64 = v.iter().map(|b| **b).sum();
    assert_eq!(s, 99_999 * 100_000 / 2);
    drop(v);
    let big = vec![7u8; 50 << 20];
    assert!(Global.owns(big.as_ptr()));
    assert_eq!(big[(50 << 20) - 1], 7);
    let mut s = String::new();
    for i in 0..100000 { s.push_str(&i.to_string()); }
    assert!(s.len() > 400000);
    Global.check_heap().unwrap();
    let t = std::thread::spawn(|| (0..1000).map(|i| vec![i; i]).collect::<Vec<_>>());
    let r = t.join().unwrap();
    drop(r);
    println!("{:?}", Global.stats());
}
