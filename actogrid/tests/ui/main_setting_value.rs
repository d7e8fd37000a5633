// Values are text, as everywhere settings are given; a name needs one.

#[actogrid::main(max_objects = 5000, call_timeout)]
async fn main() {}
