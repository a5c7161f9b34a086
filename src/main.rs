fn main() {
    println!("pgdog");
}
