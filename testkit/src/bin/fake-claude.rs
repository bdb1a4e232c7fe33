//! `fake-claude --script FILE.json [--port N]`: serves a scripted Claude Messages API (the
//! tests' [`testkit::claude::FakeClaude`]) so example workflows with `llm` steps can be run
//! without the real API. Prints its URL (what `ANTHROPIC_BASE_URL` should be) on the first
//! line of stdout, then one line per request on stderr, and runs until killed.
//!
//! The script format is [`testkit::claude::script`]'s; the scripts of the examples are in
//! `examples/agents/scripts/`. Any non-empty `x-api-key` is accepted.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::claude::{script, FakeClaude};

const USAGE: &str = "usage: fake-claude --script FILE.json [--port N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-claude: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let mut script_path: Option<PathBuf> = None;
    let mut port: u16 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--script" => script_path = Some(args.next().context(USAGE)?.into()),
            "--port" => {
                port = args
                    .next()
                    .context(USAGE)?
                    .parse()
                    .context("--port: not a port number")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument '{other}'\n{USAGE}"),
        }
    }
    let script_path = script_path.context(USAGE)?;
    let script = script::load(&script_path)?;
    let replies = script.len();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let server = FakeClaude::serve(listener, script);
    println!("{}", server.url());
    std::io::stdout().flush()?;
    eprintln!(
        "fake-claude: {replies} scripted replies from {}",
        script_path.display()
    );
    let mut seen = 0;
    let mut used_up = false;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let requests = server.requests();
        for request in &requests[seen..] {
            let prompt = request.body["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>();
            eprintln!(
                "fake-claude: {} {} ({} messages; prompt: {prompt:?})",
                request.method,
                request.path,
                request.body["messages"].as_array().map_or(0, Vec::len),
            );
        }
        seen = requests.len();
        if !used_up && server.remaining() == 0 {
            used_up = true;
            eprintln!(
                "fake-claude: every scripted reply has been used; restart it for another run"
            );
        }
    }
}
