//! Typosquats: a dependency named like a popular package of its ecosystem — one edit, a
//! transposition, a doubled or dropped letter, separators, `l`/`1` or `o`/`0` away — that
//! is not itself popular ([`typosquat`], over the lists of [`popular`]).
//!
//! Invariant: critical for the classic forms (transposed letters, a doubled or dropped
//! letter, separators, `l`/`1` and `o`/`0`), a warning otherwise.

use super::Ecosystem;
use crate::safe_outputs::threat::verdict::Severity;

/// Popular packages per ecosystem, the targets of typosquats.
fn popular(ecosystem: Ecosystem) -> &'static [&'static str] {
    match ecosystem {
        Ecosystem::Npm => &[
            "react",
            "react-dom",
            "lodash",
            "express",
            "axios",
            "chalk",
            "commander",
            "debug",
            "request",
            "moment",
            "webpack",
            "typescript",
            "eslint",
            "prettier",
            "jest",
            "mocha",
            "vue",
            "angular",
            "jquery",
            "underscore",
            "async",
            "bluebird",
            "uuid",
            "dotenv",
            "cross-env",
            "colors",
            "yargs",
            "minimist",
            "glob",
            "rimraf",
            "mkdirp",
            "semver",
            "body-parser",
            "cookie-parser",
            "cors",
            "mongoose",
            "redis",
            "socket.io",
            "next",
            "babel-cli",
            "electron",
            "node-fetch",
            "ws",
            "classnames",
            "prop-types",
            "rxjs",
            "tslib",
            "core-js",
            "inquirer",
            "nodemon",
            "fs-extra",
            "cheerio",
            "puppeteer",
            "discord.js",
            "ethers",
            "web3",
            "bootstrap",
            "jsonwebtoken",
            "bcrypt",
            "sqlite3",
        ],
        Ecosystem::Cargo => &[
            "serde",
            "serde_json",
            "tokio",
            "rand",
            "clap",
            "regex",
            "log",
            "syn",
            "quote",
            "proc-macro2",
            "anyhow",
            "thiserror",
            "reqwest",
            "hyper",
            "futures",
            "chrono",
            "lazy_static",
            "once_cell",
            "bytes",
            "libc",
            "itertools",
            "base64",
            "tracing",
            "axum",
            "actix-web",
            "uuid",
            "sha2",
            "hex",
            "url",
            "time",
            "bitflags",
            "crossbeam",
            "rayon",
            "parking_lot",
            "env_logger",
            "tempfile",
            "walkdir",
            "num",
            "openssl",
            "rustls",
            "sqlx",
            "diesel",
            "tonic",
            "prost",
        ],
        Ecosystem::PyPi => &[
            "requests",
            "numpy",
            "pandas",
            "django",
            "flask",
            "urllib3",
            "setuptools",
            "six",
            "python-dateutil",
            "pyyaml",
            "boto3",
            "botocore",
            "certifi",
            "idna",
            "charset-normalizer",
            "colorama",
            "jinja2",
            "click",
            "pytest",
            "matplotlib",
            "scipy",
            "pillow",
            "cryptography",
            "pip",
            "wheel",
            "sqlalchemy",
            "beautifulsoup4",
            "selenium",
            "tensorflow",
            "torch",
            "scikit-learn",
            "fastapi",
            "pydantic",
            "httpx",
            "aiohttp",
            "openai",
            "anthropic",
            "jsonschema",
            "psycopg2",
            "pymongo",
            "redis",
            "celery",
            "gunicorn",
            "uvicorn",
            "tqdm",
            "rich",
            "typer",
            "attrs",
            "packaging",
            "virtualenv",
            "docutils",
            "pyjwt",
            "paramiko",
            "lxml",
            "opencv-python",
            "keras",
            "tornado",
            "jellyfish",
            "dateparser",
        ],
        Ecosystem::Gems => &[
            "rails",
            "rake",
            "rack",
            "bundler",
            "rspec",
            "nokogiri",
            "devise",
            "puma",
            "sinatra",
            "json",
            "activesupport",
            "thor",
            "pry",
            "rubocop",
            "sidekiq",
            "faraday",
            "httparty",
        ],
        Ecosystem::Go => &[
            "github.com/gin-gonic/gin",
            "github.com/spf13/cobra",
            "github.com/sirupsen/logrus",
            "github.com/stretchr/testify",
            "github.com/gorilla/mux",
            "github.com/pkg/errors",
            "github.com/google/uuid",
            "golang.org/x/crypto",
            "golang.org/x/net",
            "gopkg.in/yaml.v3",
        ],
        Ecosystem::Other => &[],
    }
}

/// The popular package `name` imitates, with how bad the imitation is.
pub(super) fn typosquat(ecosystem: Ecosystem, name: &str) -> Option<(&'static str, Severity)> {
    let lower = name.to_ascii_lowercase();
    let list = popular(ecosystem);
    if list.iter().any(|p| *p == lower) || lower.len() < 4 {
        return None;
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.'))
            .map(|c| match c {
                '1' => 'l',
                '0' => 'o',
                c => c,
            })
            .collect()
    };
    for popular in list {
        if popular.len() < 4 {
            continue;
        }
        if squash(&lower) == squash(popular) {
            return Some((popular, Severity::Critical));
        }
        let distance = osa_distance(&lower, popular);
        if distance == 1 {
            let classic = transposed(&lower, popular) || doubled_or_dropped(&lower, popular);
            let severity = if classic && popular.len() >= 5 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            return Some((popular, severity));
        }
        if distance == 2 && popular.len() >= 8 {
            return Some((popular, Severity::Warning));
        }
    }
    None
}

/// Whether `a` is `b` with two neighbouring letters swapped.
fn transposed(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() != b.len() {
        return false;
    }
    let diffs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    diffs.len() == 2
        && diffs[1] == diffs[0] + 1
        && a[diffs[0]] == b[diffs[1]]
        && a[diffs[1]] == b[diffs[0]]
}

/// Whether `a` is `b` with one letter doubled or one of a double dropped.
fn doubled_or_dropped(a: &str, b: &str) -> bool {
    let dedup = |s: &str| {
        let mut out: Vec<char> = s.chars().collect();
        out.dedup();
        out
    };
    a.len().abs_diff(b.len()) == 1 && dedup(a) == dedup(b)
}

/// The optimal-string-alignment distance of `a` and `b` (edits and adjacent swaps).
fn osa_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return 3;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typosquats_are_named_like_popular_packages() {
        assert_eq!(
            typosquat(Ecosystem::PyPi, "reqeusts"),
            Some(("requests", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Npm, "crossenv"),
            Some(("cross-env", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Npm, "lodahs"),
            Some(("lodash", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Cargo, "serdee"),
            Some(("serde", Severity::Critical))
        );
        assert!(typosquat(Ecosystem::PyPi, "requests").is_none());
        assert!(typosquat(Ecosystem::Cargo, "plue-core").is_none());
        assert!(typosquat(Ecosystem::Npm, "left-pad").is_none());
    }
}
