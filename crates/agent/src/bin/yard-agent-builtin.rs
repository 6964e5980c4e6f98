//! `yard-agent-builtin builtin <name> [args]`: the agent's built-in programs as a standalone
//! executable (what `yard builtin` does inside the main binary; used by this crate's tests).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = if args.first().map(String::as_str) == Some("builtin") { &args[1..] } else { &args[..] };
    let Some(name) = args.first() else {
        eprintln!("usage: yard-agent-builtin builtin <name> [args]");
        std::process::exit(2);
    };
    std::process::exit(yard_agent::run_builtin(name, &args[1..]));
}
