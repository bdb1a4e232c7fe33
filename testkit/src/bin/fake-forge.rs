//! `fake-forge --flavor github|gitea --token T [--port N] [--root DIR] [--repo OWNER/NAME[=SEED_DIR]]…
//! [--issue OWNER/NAME=TITLE]… [--user LOGIN=PERMISSION]…`: serves the tests'
//! [`testkit::forge::FakeForge`] so example workflows can open pull requests and answer on
//! issues without a real forge. Prints its URL on the first line of stdout (the API is at
//! `{url}/api/v3` for GitHub, `{url}/api/v1` for Gitea; repositories at
//! `{url}/OWNER/NAME.git`), then one line per request on stderr, and runs until killed.
//!
//! `--repo` creates a repository whose `main` holds the files under SEED_DIR (one commit);
//! `--issue` opens an issue (numbered from 1) as `alice`; `--user` makes a login known
//! with a permission (`admin`, `write`, `read`, `none`) for the collaborator API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::forge::{FakeForge, Flavor};

const USAGE: &str = "usage: fake-forge --flavor github|gitea --token T [--port N] [--root DIR] \
                     [--repo OWNER/NAME[=SEED_DIR]]... [--issue OWNER/NAME=TITLE]... \
                     [--user LOGIN=PERMISSION]...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-forge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let mut flavor = None;
    let mut token = None;
    let mut port: u16 = 0;
    let mut root: Option<PathBuf> = None;
    let mut repos = Vec::new();
    let mut issues = Vec::new();
    let mut users = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context(USAGE);
        match arg.as_str() {
            "--flavor" => {
                let name = value()?;
                flavor = Some(
                    Flavor::parse(&name)
                        .with_context(|| format!("--flavor: '{name}' is not github or gitea"))?,
                )
            }
            "--token" => token = Some(value()?),
            "--port" => port = value()?.parse().context("--port: not a port number")?,
            "--root" => root = Some(value()?.into()),
            "--repo" => repos.push(value()?),
            "--issue" => issues.push(value()?),
            "--user" => users.push(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument '{other}'\n{USAGE}"),
        }
    }
    let flavor = flavor.context(USAGE)?;
    let token = token.context(USAGE)?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    // Removed when the process ends normally; a killed one leaves it in the temp dir.
    let scratch = tempfile::Builder::new()
        .prefix("plue-fake-forge-")
        .tempdir()
        .context("creating a directory for the repositories")?;
    let root = root.unwrap_or_else(|| scratch.path().to_owned());
    let forge = FakeForge::serve(listener, flavor, &token, root)?;
    for repo in &repos {
        match repo.split_once('=') {
            Some((name, seed)) => {
                forge.create_repo_from(name, seed.as_ref())?;
            }
            None => {
                forge.create_repo(repo)?;
            }
        }
    }
    for issue in &issues {
        let (repo, title) = issue
            .split_once('=')
            .context("--issue takes OWNER/NAME=TITLE")?;
        forge.create_issue(repo, title, "", "alice");
    }
    for user in &users {
        let (login, permission) = user
            .split_once('=')
            .context("--user takes LOGIN=PERMISSION")?;
        forge.set_permission(login, permission);
    }
    println!("{}", forge.url());
    std::io::stdout().flush()?;
    eprintln!(
        "fake-forge: {flavor:?} API at {}, {} repositories",
        forge.api_url(),
        repos.len()
    );
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let requests = forge.requests();
        for request in &requests[seen..] {
            eprintln!("fake-forge: {} {}", request.method, request.path);
        }
        seen = requests.len();
    }
}
