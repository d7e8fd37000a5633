// A misspelt setting is refused at its name, with the valid ones.

#[actogrid::main(heartbeat_timout = "30s", call_timeout = "none")]
async fn main() {}
