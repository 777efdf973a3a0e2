emma::emma_instance!(Foo, bogus = 1);

fn main() {}
