emma::emma_instance!(Heap);
emma::emma_instance!(Heap);

fn main() {}
