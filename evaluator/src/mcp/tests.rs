use super::*;

fn stdio(tools: &[&str]) -> McpServer {
    McpServer {
        command: Some(vec!["node".into(), "server.js".into()]),
        tools: tools.iter().map(|t| t.to_string()).collect(),
        ..McpServer::default()
    }
}

fn http(url: &str) -> McpServer {
    McpServer {
        url: Some(url.into()),
        tools: vec!["search".into()],
        ..McpServer::default()
    }
}

fn one(name: &str, server: McpServer) -> BTreeMap<String, McpServer> {
    BTreeMap::from([(name.to_owned(), server)])
}

#[test]
fn a_stdio_server_with_tools_passes() {
    assert!(check(&one("fs", stdio(&["read_text_file"])), &[], None).is_empty());
}

#[test]
fn every_bad_shape_is_named() {
    let cases: Vec<(BTreeMap<String, McpServer>, &str)> = vec![
        (one("Bad Name", stdio(&["a"])), "mcp server name 'Bad Name'"),
        (one("a__b", stdio(&["a"])), "without '__'"),
        (one("a_", stdio(&["b"])), "ending with a letter or digit"),
        (one("fs", stdio(&[])), "tools must list"),
        (one("fs", stdio(&["a.b"])), "tool name 'a.b'"),
        (one("fs", stdio(&["a", "a"])), "listed twice"),
        (
            one(
                "fs",
                McpServer {
                    command: Some(vec![]),
                    ..stdio(&["a"])
                },
            ),
            "command must name a program",
        ),
        (
            one(
                "fs",
                McpServer {
                    url: Some("https://x.example/mcp".into()),
                    ..stdio(&["a"])
                },
            ),
            "not both",
        ),
        (
            one(
                "fs",
                McpServer {
                    tools: vec!["a".into()],
                    ..McpServer::default()
                },
            ),
            "set command=",
        ),
        (
            one(
                "fs",
                McpServer {
                    timeout_secs: Some(0),
                    ..stdio(&["a"])
                },
            ),
            "timeout_secs must be",
        ),
        (
            one(
                "fs",
                McpServer {
                    max_calls: Some(5000),
                    ..stdio(&["a"])
                },
            ),
            "max_calls must be",
        ),
        (
            one(
                "fs",
                McpServer {
                    env: BTreeMap::from([("PLUE_TOKEN".into(), "x".into())]),
                    ..stdio(&["a"])
                },
            ),
            "is reserved",
        ),
        (one("fs", stdio(&[&"t".repeat(60)])), "longer than 64"),
    ];
    for (servers, wanted) in cases {
        let problems = check(&servers, &[], None);
        assert!(
            problems.iter().any(|p| p.contains(wanted)),
            "{wanted:?} not in {problems:?}"
        );
    }
}

#[test]
fn an_http_server_needs_the_allow_list_and_a_declared_secret() {
    let allow = Network::Allow(vec!["docs.example.com".into()]);
    assert!(check(
        &one("docs", http("https://docs.example.com/mcp")),
        &[],
        Some(&allow)
    )
    .is_empty());
    assert!(check(
        &one("docs", http("https://docs.example.com/mcp")),
        &[],
        Some(&Network::Open)
    )
    .is_empty());
    let refused = |server: McpServer, network: Option<&Network>, secrets: &[String]| {
        check(&one("docs", server), secrets, network).join("\n")
    };
    assert!(refused(http("https://docs.example.com/mcp"), None, &[]).contains("allow-list"));
    assert!(refused(
        http("https://docs.example.com/mcp"),
        Some(&Network::None),
        &[]
    )
    .contains("allow-list"));
    assert!(refused(http("https://evil.example/mcp"), Some(&allow), &[])
        .contains("not in the step's network allow-list"));
    // A wildcard never names the bare domain; a port must match.
    let wild = Network::Allow(vec!["*.example.com:443".into()]);
    assert!(refused(http("https://example.com/mcp"), Some(&wild), &[]).contains("not in"));
    assert!(refused(http("http://a.example.com/mcp"), Some(&wild), &[]).contains("not in"));
    assert!(refused(http("https://a.example.com/mcp"), Some(&wild), &[]).is_empty());
    assert!(refused(
        http("https://user:pw@docs.example.com/mcp"),
        Some(&allow),
        &[]
    )
    .contains("credentials"));
    assert!(refused(http("file:///etc/passwd"), Some(&allow), &[]).contains("http://"));
    let with_secret = McpServer {
        bearer_secret: Some("TOKEN".into()),
        ..http("https://docs.example.com/mcp")
    };
    assert!(
        refused(with_secret.clone(), Some(&allow), &[]).contains("not one of the step's secrets")
    );
    assert!(refused(with_secret, Some(&allow), &["TOKEN".into()]).is_empty());
}

#[test]
fn two_servers_never_show_one_name() {
    let servers = BTreeMap::from([
        ("a".to_owned(), stdio(&["_b"])),
        ("a_".to_owned(), stdio(&["b"])),
    ]);
    let problems = check(&servers, &[], None).join("\n");
    assert!(
        problems.contains("both show the model a tool named 'mcp__a___b'"),
        "{problems}"
    );
    assert!(
        problems.contains("ending with a letter or digit"),
        "{problems}"
    );
}
