emma::emma_instance!();

fn main() {}
