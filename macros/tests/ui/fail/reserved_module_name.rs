// An instance also defines the module `__emma_instance_<Name>` (its
// state lives there), so a caller's item of that name clashes.
#![allow(non_snake_case)]

emma::emma_instance!(Heap);

mod __emma_instance_Heap {}

fn main() {}
