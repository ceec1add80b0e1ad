//! The shopsim command line.
fn main() {
    println!("shopsim");
}
