// `owns` is a method of `emma::InstanceExt`, which is not imported.
emma::emma_instance!(Heap);

fn main() {
    let x = 0u8;
    assert!(!Heap.owns(&x));
}
