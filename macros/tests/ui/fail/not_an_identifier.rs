emma::emma_instance!(123);

fn main() {}
