//! Rules on what added lines *do*: download-and-run (`pipe-to-shell`), decode-and-run
//! (`decode-exec`), reverse shells (`reverse-shell`), persistence (`persistence`),
//! destroying data (`destructive`), mining (`cryptominer`),
//! secrets or the environment sent out (`exfiltration`), reading credentials
//! (`credential-read`), turning TLS or host checks off (`tls-disabled`), making files
//! executable (`chmod-exec`), evaluating strings (`dynamic-eval`), running at generate
//! time (`hook-command`).
//!
//! Invariants: each line is matched as it is and as the shell reads it
//! ([`super::shell_folded`]); two-line forms are caught by a window — a decode followed by
//! an `eval`/`exec` of a name within [`WINDOW`] lines, a secret or environment source and a
//! network sink within [`WINDOW`] lines; in documentation and texts a finding is a warning
//! ([`super::Doc::weigh`]), in code it keeps its severity.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::super::verdict::{Finding, Severity};
use super::super::Scope;
use super::{excerpt, shell_folded, Doc, Kind};

/// How many lines apart a two-line form's halves may stand.
pub(crate) const WINDOW: u32 = 4;

/// The shells and interpreters a download may be piped into.
const SHELLS: &str = r"(?:(?:ba|z|da|k|c|tc|fi|a|mk)?sh|python[0-9.]*|perl|ruby|node|php|iex|invoke-expression|pwsh|powershell|source)";

/// Library calls that hand their argument to a shell or an interpreter (method calls the
/// bare-word forms miss: `os.system(...)`, `subprocess.run(...)`, `child_process.exec(...)`).
const RUNNERS: &str = r"(?i:\bos\.(?:system|popen|exec[lv]p?e?|spawn\w*)|\bsubprocess\.(?:run|call|check_call|check_output|popen|getoutput|getstatusoutput)|\bchild_process\.(?:exec|execsync|spawn|spawnsync|execfile)|\bruntime\.getruntime\(\)\.exec|\b(?:shell_exec|passthru|proc_open)|\bcommands\.getoutput|\bkernel\.(?:system|exec|spawn))";

/// `(rule, severity, what, pattern)`; patterns are case-insensitive.
fn line_rules() -> Vec<(&'static str, Severity, &'static str, String)> {
    use Severity::{Critical, Warning};
    let fetch = r"(?:curl|wget|fetch|iwr|irm|invoke-webrequest|invoke-restmethod|lwp-request|aria2c|http(?:ie)?\s+get)";
    let decode = r"(?:base64\s+(?:-d|--decode|-D|-di)\b|xxd\s+(?:-r|-p\s+-r|-rp|-r\s+-p)|openssl\s+(?:enc\s+)?(?:-d|base64\s+-d|enc\s+-d)|gunzip|gzip\s+-d|uudecode|rev\b)";
    let decoders = r"(?:b64decode|b32decode|b16decode|a85decode|b85decode|decodebytes|decodestring|atob\s*\(|base64|frombase64string|decode64|unpack\s*\(\s*['\x22]m|fromhex|unhexlify|bytes\.fromhex|decompress|fromcharcode|codecs\.decode|rot_?13|marshal\.loads|pickle\.loads|zlib|lzma|\[::-1\]|chr\s*\(|\\x[0-9a-f]{2}\\x[0-9a-f]{2})";
    vec![
        (
            "pipe-to-shell",
            Critical,
            "pipes a download into a shell or interpreter",
            format!(r"(?i)\b{fetch}\b[^|\n]*\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:env\s+(?:\S+=\S*\s+)*)?(?:\S*/)?{SHELLS}\b"),
        ),
        (
            "pipe-to-shell",
            Critical,
            "runs a download through process substitution or command substitution",
            format!(r"(?i)(?:\b{SHELLS}|\.)\s+<\(\s*{fetch}\b|\b{SHELLS}\s+-c\s+['\x22]?\$\(\s*{fetch}\b|\beval\s+['\x22]?\$\(\s*{fetch}\b|`\s*{fetch}\b[^`]*`\s*\|\s*{SHELLS}"),
        ),
        (
            "pipe-to-shell",
            Critical,
            "downloads a script and runs it",
            r"(?i)\b(?:iex|invoke-expression)\b.*(?:downloadstring|downloadfile|net\.webclient|invoke-webrequest|\biwr\b|\birm\b)|downloadstring\s*\(.*\)\s*\|\s*(?:iex|invoke-expression)|\b(?:exec|eval)\s*\(\s*(?:await\s+)?(?:\(\s*await\s+)?(?:requests|urllib[0-9]?|httpx|urlopen|urllib\.request|fetch)\b|\bexec\s*\(\s*urlopen|\b(?:exec|eval)\s*\([^\n]*(?:\burlopen\s*\(|\brequests\.get\s*\(|\bhttpx\.get\s*\(|\burllib[0-9]?\.\w+\.urlopen\b)|\b(?:subprocess\.\w+|os\.system|os\.popen|check_output|check_call)\s*\([^\n]*\burlopen\s*\(|\b(?:load|loadstring|dofile)\s*\(\s*(?:game:)?httpget|\bnew\s+function\s*\(.*\bfetch\s*\(|\beval\s*\(.*\bfetch\s*\(|\beval\s*\(.*\.responsetext|\bnode\s+-e\s+.*(?:https?\.get|fetch\()".into(),
        ),
        (
            "pipe-to-shell",
            Critical,
            "downloads a file and runs it in one command",
            format!(r"(?i)\b{fetch}\b[^\n;&|]*\s(?:-[a-zA-Z]*[oO]|--output|--output-document)\s*(\S+)[^\n]*(?:&&|;)\s*(?:(?:sudo\s+)?(?:chmod\s+\S+\s+\S+\s*(?:&&|;)\s*)?(?:\./|/tmp/|\$\{{?tmp|{SHELLS}\s+))"),
        ),
        (
            "decode-exec",
            Critical,
            "decodes data and pipes it into a shell",
            format!(r"(?i)\b{decode}[^\n]*\|\s*(?:sudo\s+)?(?:\S*/)?{SHELLS}\b|\bprintf\s+['\x22]?(?:\\x[0-9a-f]{{2}}|\\[0-7]{{3}}){{4,}}[^\n]*\|\s*{SHELLS}\b|\b{SHELLS}\s+-c\s+['\x22]?\$\([^)]*\b{decode}"),
        ),
        (
            "decode-exec",
            Critical,
            "evaluates decoded or assembled data",
            format!(r"(?i)(?:^|[^.\w])(?:eval|exec|execfile|system|instance_eval|class_eval|invoke-expression|iex)\s*[\(\s]\s*.*{decoders}|(?:^|[^.\w])(?:compile|popen|spawn|execsync|(?-i:Function))\s*\(\s*.*{decoders}|(?:^|[^.\w])assert\s*\(\s*(?:base64_decode|gzinflate|gzuncompress|str_rot13)|{RUNNERS}\s*\(.*{decoders}|\beval\s+['\x22]?\$\(.*\b{decode}|{decoders}.*\|\s*(?:iex|invoke-expression)\b|\b(?:powershell|pwsh)(?:\.exe)?\b.*\s-(?:e|ec|enc|encodedcommand)\s+[a-z0-9+/=]{{16,}}|\bnew\s+function\s*\(.*{decoders}|\b(?:pickle|cpickle|marshal|dill|cloudpickle|shelve)\.loads?\s*\(.*{decoders}"),
        ),
        (
            "reverse-shell",
            Critical,
            "opens a shell over the network",
            r"(?i)/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)\b[^\n]*\s-(?:e|c)\s|\bbash\s+-i\b[^\n]*[<>]&|\bsh\s+-i\b[^\n]*[<>]&|\bsocat\b[^\n]*\b(?:exec|system):|\bmkfifo\b[^\n]*\b(?:nc|ncat|netcat|telnet|openssl\s+s_client)\b|pty\.spawn\s*\(\s*['\x22](?:/bin/)?(?:ba|z)?sh|os\.dup2\s*\(\s*\w+\.fileno\(\)|\bsubprocess\.\w+\(\s*\[\s*['\x22](?:/bin/)?(?:ba|z)?sh['\x22]\s*,\s*['\x22]-i['\x22]|net\.(?:socket|connect|createconnection)\b.*\b(?:/bin/(?:ba)?sh|cmd\.exe)\b|child_process.*\bnet\.(?:socket|connect)|system\.net\.sockets\.tcpclient|tcpsocket\.(?:new|open)\b.*\b(?:exec|spawn|system|sh)\b|\btelnet\b[^\n]*\|\s*(?:/bin/)?(?:ba)?sh|\bexec\s+\d+<>/dev/|\bsocket\.socket\(.*\bconnect\b.*\b(?:subprocess|pty|/bin/sh)|\bconnect\(\s*\(\s*['\x22][^'\x22]+['\x22]\s*,\s*\d+\s*\)\s*\).*\b(?:dup2|subprocess|pty|/bin/sh)".into(),
        ),
        (
            "persistence",
            Critical,
            "installs itself where it keeps running (an SSH key, cron, sudoers, preload, shell start-up)",
            r"(?i)\bauthorized_keys2?\b|/etc/sudoers|ld\.so\.preload|\bld_preload\s*=|\bcrontab\s+(?:-\s*$|-\s|-r|\S+\.\w+)|\|\s*crontab\b|/etc/cron|/var/spool/cron|>>?\s*['\x22]?(?:~|\$home|\$\{home\}|/root|/home/\w+)/\.(?:bashrc|bash_profile|zshrc|profile|zprofile)\b|\bsystemctl\s+(?:--\w+\s+)*enable\b|/etc/systemd/system/|/etc/rc\.local|\blaunchctl\s+load\b|library/launchagents|currentversion\\\\?run\b|\bchmod\s+(?:-\w+\s+)*(?:[ugoa]*\+[rwx]*s|0?[2-7][0-7]{3})\b|\bgit\s+config\s+(?:--\w+\s+)*core\.(?:hookspath|fsmonitor|sshcommand)\b".into(),
        ),
        (
            "destructive",
            Critical,
            "destroys data or the machine",
            r"(?i)\brm\s+(?:-\w*\s+)*-\w*[rf]\w*\s+(?:-\w+\s+)*(?:--no-preserve-root\s+)?(?:/|/\*|~|~/|\$home|\$\{home\}|/home|/etc|/usr|/var|/boot|\.git)(?:\s|$|['\x22;&|])|\bmkfs(?:\.\w+)?\s+/dev/|\bdd\s+[^\n]*\bof=/dev/(?:sd|nvme|hd|xvd|vd|disk)|:\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:|\bchmod\s+-R\s+0?777\s+/(?:\s|$)|\bshred\s+[^\n]*/dev/|\bshutil\.rmtree\(\s*['\x22](?:/|~)['\x22]|\bgit\s+push\s+[^\n]*--force\b[^\n]*\b(?:main|master)\b".into(),
        ),
        (
            "cryptominer",
            Critical,
            "runs a cryptocurrency miner",
            r"(?i)\bxmrig\b|stratum\+(?:tcp|ssl)://|\bminerd\b|\bcpuminer\b|\bcryptonight\b|\bnicehash\b|\bmonero(?:ocean)?\b.*\bpool\b|\bethminer\b|\bnbminer\b|\bt-rex\s+-a\b".into(),
        ),
        (
            "credential-read",
            Warning,
            "reads credentials or keys",
            r"(?i)~/\.ssh/|\.ssh/id_(?:rsa|ed25519|ecdsa|dsa)\b|\.aws/credentials|/etc/shadow|\.git-credentials|\.docker/config\.json|\.kube/config|\.netrc\b|\bsecurity\s+find-(?:generic|internet)-password|\blogin\s+data\b|\.config/gh/hosts\.yml|\.pypirc|\.npmrc|/proc/self/environ|/proc/\d+/environ|\bgcloud\s+auth\s+print-access-token".into(),
        ),
        (
            "tls-disabled",
            Warning,
            "turns a TLS or host-key check off",
            r"(?i)node_tls_reject_unauthorized\s*[=:]\s*['\x22]?0|\bverify\s*=\s*false\b|strict-ssl\s*[=:]?\s*false|\bcurl\b[^\n]*\s(?:-k|--insecure)\b|sslverify\s*=\s*(?:false|0)\b|stricthostkeychecking[= ]+no\b|insecureskipverify\s*:\s*true|danger_accept_invalid_(?:certs|hostnames)\s*\(\s*true|rejectunauthorized\s*:\s*false|git_ssl_no_verify|--trusted-host\b|\bwget\b[^\n]*--no-check-certificate|ssl\._create_unverified_context|check_hostname\s*=\s*false|cert_reqs\s*=\s*['\x22]?cert_none".into(),
        ),
        (
            "chmod-exec",
            Warning,
            "makes a file executable",
            r"(?i)\bchmod\s+(?:-\w+\s+)*(?:[ugoa]*\+[rw]*x|0?[0-7]?[1357][0-7]{2})\b|(?:os\.chmod|fs\.chmod(?:sync)?|from_mode|set_mode|file\.chmod)\s*\(.*\b0o?[0-7]?[1357][0-7]{2}\b|\bs_ix(?:usr|grp|oth)\b|\bstat\.s_iexec\b|\bset_executable\b".into(),
        ),
        (
            "dynamic-eval",
            Warning,
            "evaluates a string as code",
            r"(?:^|[^.\w$])(?:eval|exec)\s*\(\s*[^)\s'\x22]|\bnew\s+Function\s*\(|\b__import__\s*\(|(?:^|[;&|(]\s*|\bthen\s+|\bdo\s+)eval\s+['\x22$]|\b(?:instance_eval|class_eval|module_eval)\b|\bInvoke-Expression\b|\bvm\.runIn(?:This|New)?Context\s*\(|\bScriptEngineManager\b|\bRuntime\.getRuntime\(\)\.exec\s*\(".into(),
        ),
        (
            "hook-command",
            Warning,
            "runs a command at generate time",
            r"(?i)^\s*//\s*go:generate\s".into(),
        ),
        (
            "install-from-url",
            Warning,
            "installs a package from a URL, a git repository or another index",
            r"(?i)\b(?:npm|pnpm|yarn|bun)\s+(?:install|i|add)\b[^\n]*(?:\sgit\+|\sgit://|\s(?:github|gitlab|bitbucket|gist):|\shttps?://|--registry[ =])|\b(?:pip[0-9.]*|pipx|uv\s+pip|python[0-9.]*\s+-m\s+pip)\s+install\b[^\n]*(?:\sgit\+|@\s*git\+|\shttps?://|\s(?:-i|--index-url|--extra-index-url|-f|--find-links)[ =])|\bcargo\s+install\b[^\n]*(?:--git|--index|--registry)\b|\bgem\s+install\b[^\n]*(?:--source|--clear-sources|-s\s)".into(),
        ),
        (
            "privileged-container",
            Warning,
            "runs a container with the host's powers",
            r"(?i)\bprivileged\s*:\s*true\b|\s--privileged\b|\bhost(?:pid|ipc|network)\s*:\s*true\b|/var/run/docker\.sock|\s-v\s+/:/|\ballowprivilegeescalation\s*:\s*true\b|--cap-add[ =](?:all|sys_admin)\b|\bcap_add\s*:.*\bsys_admin\b|\badd\s*:\s*\[[^\]]*\bsys_admin\b|^\s*-\s*['\x22]?sys_admin['\x22]?\s*$|--pid[ =]host\b".into(),
        ),
    ]
}

struct Compiled {
    set: RegexSet,
    rules: Vec<(&'static str, Severity, &'static str, Regex)>,
}

static RULES: LazyLock<Compiled> = LazyLock::new(|| {
    let rules: Vec<_> = line_rules()
        .into_iter()
        .map(|(id, sev, what, pattern)| {
            let regex = Regex::new(&pattern).unwrap_or_else(|e| panic!("rule {id}: {e}"));
            (id, sev, what, regex)
        })
        .collect();
    let set = RegexSet::new(rules.iter().map(|r| r.3.as_str())).expect("the rules compile");
    Compiled { set, rules }
});

/// Where a secret or the whole environment is read (the first half of `exfiltration`).
static SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\bprintenv\b|\$\(\s*(?:whoami|hostname|id|uname(?:\s+-a)?)\s*\)|(?:^|[\s(;|`$])env\s*(?:\||>|\)|`|$)|\$\(\s*env\s*\)|\bos\.environ\b(?:\s*[\),}]|\s*$|\.copy\(\)|\.items\(\))|dict\(\s*os\.environ|json\.dumps\(\s*(?:dict\()?os\.environ|\bprocess\.env\b\s*(?:[\),}]|$)|json\.stringify\(\s*process\.env|object\.(?:entries|keys)\(\s*process\.env|\benv\.to_h\b|\benv::vars(?:_os)?\s*\(\)|\bENV\.to_h\b|system\.getenv\(\s*\)|environment\.getenvironmentvariables|get-childitem\s+env:|~/\.ssh|\.ssh/id_|\.aws/credentials|/etc/passwd|/etc/shadow|\.git-credentials|\.npmrc|\.pypirc|\.netrc|\.kube/config|/proc/self/environ|\$\{\{\s*secrets\.|\$\{?\w*(?:token|secret|password|passwd|api_?key|access_?key|private_?key)\w*\b|\b(?:github|gh|npm|pypi|anthropic|openai|aws|slack|gitlab)_(?:token|key|secret|api_key|access_key_id|secret_access_key)\b|\bsecrets\.[a-z_]+_(?:token|key)\b",
    )
    .expect("the source pattern compiles")
});

/// Where data leaves the machine (the second half of `exfiltration`).
static SINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:curl|wget|nc|ncat|netcat|telnet|nslookup|dig|scp|rsync|ftp|sftp)\b|\brequests\.(?:post|get|put|request)\b|\burllib|\burlopen\b|\bhttpx\.|\bhttps?\.(?:request|get)\b|\bfetch\s*\(|\baxios\b|xmlhttprequest|sendbeacon|net::http|\bsocket\.|invoke-webrequest|invoke-restmethod|webclient|\bdns\.(?:resolve|lookup)|\bgethostbyname\b|\bnew\s+image\(\)\.src|\bhttp\.post\b|\breqwest::|\bureq::|\btcpstream::connect|\budpsocket::|\bnet\.dial\w*\s*\(|\bhttp\.(?:postform|newrequest)\b|\bnew\s+socket\s*\(|\bhttpclient\b|httpurlconnection|\bopenconnection\s*\(|\bnet\.createconnection\b|\bfaraday\.|\bhttparty\.",
    )
    .expect("the sink pattern compiles")
});

/// A source that reads the whole environment or a credential file in code (shell dumps
/// and copies of the environment for a child are the window's): with a network sink
/// anywhere in the same code file (not only within [`WINDOW`] lines) that names an endpoint
/// ([`super::network::is_endpoint`]), a critical `exfiltration`.
static BULK_SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\bos\.environ\b(?:\s*[\),}]|\s*$|\.items\(\)|\.values\(\))|dict\(\s*os\.environ|\bprocess\.env\b\s*(?:[\),}]|$)|object\.(?:entries|keys|values)\(\s*process\.env|json\.stringify\(\s*process\.env|\benv::vars(?:_os)?\s*\(\)|\bos\.environ\(\)|\bENV\.to_h\b|system\.getenv\(\s*\)|environment\.getenvironmentvariables|get-childitem\s+env:|~/\.ssh|\.ssh/id_|\.aws/credentials|\.git-credentials|/proc/self/environ|\.kube/config|\.docker/config\.json",
    )
    .expect("the bulk source pattern compiles")
});

/// The environment handed to a child process (`env=os.environ.copy()`,
/// `{ env: { ...process.env } }`), on a line that sends nothing: what it reads stays on
/// the machine.
static CHILD_ENV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[(,]\s*env\s*=\s*(?:dict\(\s*)?(?:\{\s*\*\*\s*)?os\.environ\b|[{,]\s*env\s*:\s*\{\s*\.\.\.process\.env\b|[{,]\s*env\s*:\s*process\.env\s*[,}]")
        .expect("the child-environment pattern compiles")
});

/// A download kept in a name (the first half of a two-line download-and-run).
static FETCHED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\binvoke-webrequest\b|\binvoke-restmethod\b|\b(?:iwr|irm)\s|downloadstring\s*\(|\burlopen\s*\(|\brequests\.get\s*\(|\bhttpx\.get\s*\(|\burllib[0-9]?\.request\.urlopen\b|\$\(\s*(?:curl|wget)\b|`\s*(?:curl|wget)\b")
        .expect("the fetch pattern compiles")
});

/// Code or a shell line run from a name (the second half of a two-line download-and-run):
/// `eval`/`exec`/`Function`/`Invoke-Expression` of a name, `os.system`-like shell strings,
/// a pipe into a shell — not a process started from an argument list.
static RUNS_CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:^|[^.\w])(?:eval|exec|execfile|(?-i:Function)|system|popen|execsync)\s*\(\s*[a-z_$][\w$.]*\s*[\),]|\b(?:os\.system|os\.popen|child_process\.exec(?:sync)?|shell_exec|passthru)\s*\(\s*[a-z_$][\w$.]*\s*[\),]|\beval\s+['\x22]?\$\w+|\b(?:iex|invoke-expression)\s+\$\w+|\|\s*(?:ba)?sh\s*$")
        .expect("the runs-code pattern compiles")
});

/// A decode assigned or called (the first half of a two-line `decode-exec`).
static DECODED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:b64decode|b32decode|a85decode|decodebytes|atob\s*\(|buffer\.from\s*\([^)]*['\x22](?:base64|hex)['\x22]|frombase64string|decode64|bytes\.fromhex|unhexlify|zlib\.decompress|codecs\.decode|marshal\.loads|base64\s+(?:-d|--decode))")
        .expect("the decode pattern compiles")
});

/// An `eval`/`exec` of a name (the second half of a two-line `decode-exec`).
static RUNS_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)(?:^|[^.\w])(?:eval|exec|execfile|(?-i:Function)|system|popen|execsync)\s*\(\s*[a-z_$][\w$.]*\s*[\),]|{RUNNERS}\s*\(\s*[a-z_$][\w$.]*\s*[\),]|\beval\s+['\x22]?\$\w+|\b(?:iex|invoke-expression)\s+\$\w+|\|\s*(?:ba)?sh\s*$"))
        .expect("the runs-a-name pattern compiles")
});

pub(crate) fn check(doc: &Doc<'_>, scope: &Scope<'_>, found: &mut Vec<Finding>) {
    let mut sources: Vec<u32> = Vec::new();
    let mut sinks: Vec<(u32, bool)> = Vec::new();
    let mut decodes: Vec<u32> = Vec::new();
    let mut runs: Vec<u32> = Vec::new();
    let mut fetches: Vec<u32> = Vec::new();
    let mut code_runs: Vec<u32> = Vec::new();
    let mut bulk: Vec<u32> = Vec::new();
    // The hosts the document's code names (comments aside): a sink line naming none is
    // judged by them.
    let doc_hosts: Vec<String> = doc
        .lines
        .iter()
        .filter(|l| {
            let t = l.text.trim_start();
            !["//", "#", "/*", "* ", "--"]
                .iter()
                .any(|p| t.starts_with(p))
                || t.starts_with("#!")
        })
        .flat_map(|l| super::network::hosts_in(&l.text))
        .collect();
    let all_allowed = |hosts: &[String]| {
        !hosts.is_empty()
            && hosts
                .iter()
                .all(|host| scope.allows(host) || super::network::reserved(host))
    };
    for (index, line) in doc.lines.iter().enumerate() {
        let at = if line.number > 0 {
            line.number
        } else {
            index as u32 + 1
        };
        let folded = shell_folded(&line.text);
        let views = [line.text.as_str(), folded.as_str()];
        let mut hits: Vec<usize> = Vec::new();
        for view in views {
            hits.extend(RULES.set.matches(view).iter());
        }
        hits.sort_unstable();
        hits.dedup();
        for hit in hits {
            let (id, severity, what, _) = &RULES.rules[hit];
            if *id == "dynamic-eval" && doc.kind != Kind::Code {
                continue;
            }
            if matches!(*id, "hook-command" | "privileged-container") && doc.kind != Kind::Code {
                continue;
            }
            if *id == "install-from-url" && !installs_from_elsewhere(doc, scope, &line.text) {
                continue;
            }
            if *id == "chmod-exec" && doc.file.is_some_and(is_test_file) {
                // Tests make their own temporary files executable; a download run from a
                // test is `pipe-to-shell`'s.
                continue;
            }
            found.push(doc.finding(
                id,
                doc.weigh(*severity),
                at,
                format!("{what}: {}", excerpt(&line.text)),
            ));
        }
        let to_child = CHILD_ENV.is_match(&line.text) && !views.iter().any(|v| SINK.is_match(v));
        if views.iter().any(|v| SOURCE.is_match(v)) && !to_child {
            sources.push(at);
        }
        if views.iter().any(|v| BULK_SOURCE.is_match(v)) {
            bulk.push(at);
        }
        if views.iter().any(|v| SINK.is_match(v)) {
            let hosts = super::network::hosts_in(&line.text);
            let to_allowed = if hosts.is_empty() {
                all_allowed(&doc_hosts)
            } else {
                all_allowed(&hosts)
            };
            sinks.push((at, to_allowed));
        }
        if views.iter().any(|v| FETCHED.is_match(v)) {
            fetches.push(at);
        }
        if views.iter().any(|v| RUNS_CODE.is_match(v)) {
            code_runs.push(at);
        }
        if views.iter().any(|v| DECODED.is_match(v)) {
            decodes.push(at);
        }
        if views.iter().any(|v| RUNS_NAME.is_match(v)) {
            runs.push(at);
        }
    }
    let near = |a: u32, b: u32| a.abs_diff(b) <= WINDOW;
    // A source and a sink near each other; in code, the whole environment or a credential
    // file read anywhere in the file and a sink anywhere in it.
    let paired = sources
        .iter()
        .find_map(|s| {
            sinks
                .iter()
                .find(|(k, _)| near(*s, *k))
                .map(|(k, allowed)| (*s, *k, *allowed))
        })
        .or_else(|| {
            let source = *bulk.first().filter(|_| doc.kind == Kind::Code)?;
            let (sink, _) = sinks.first()?;
            // Only with an endpoint named: settings read from the environment and a call to
            // a URL the caller gives are ordinary.
            doc_hosts
                .iter()
                .any(|host| super::network::is_endpoint(scope, host))
                .then_some((source, *sink, false))
        });
    if let Some((source, sink, allowed)) = paired {
        let severity = if allowed {
            Severity::Warning
        } else {
            Severity::Critical
        };
        let text = line_text(doc, sink);
        // Documentation showing how to call an allowed or placeholder host with a token
        // is an example, not a leak.
        let example = allowed && matches!(doc.kind, Kind::Docs | Kind::Text);
        if !example {
            found.push(doc.finding(
                "exfiltration",
                doc.weigh(severity),
                sink,
                format!(
                    "sends secrets or the environment (read at line {source}) over the network: {}",
                    excerpt(&text)
                ),
            ));
        }
    }
    if let Some((fetch, run)) = fetches.iter().find_map(|f| {
        code_runs
            .iter()
            .find(|r| near(*f, **r) && *r > f)
            .map(|r| (*f, *r))
    }) {
        let text = line_text(doc, run);
        found.push(doc.finding(
            "pipe-to-shell",
            doc.weigh(Severity::Critical),
            run,
            format!(
                "runs what it downloaded at line {fetch}: {}",
                excerpt(&text)
            ),
        ));
    }
    if let Some((decode, run)) = decodes.iter().find_map(|d| {
        runs.iter()
            .find(|r| near(*d, **r) && *r >= d)
            .map(|r| (*d, *r))
    }) {
        let text = line_text(doc, run);
        found.push(doc.finding(
            "decode-exec",
            doc.weigh(Severity::Critical),
            run,
            format!("runs what it decoded at line {decode}: {}", excerpt(&text)),
        ));
    }
}

/// Whether an install `line` fetches from somewhere the scope does not allow: a host that
/// is not the forge's nor in `allow_links`, or (in code) any git repository.
fn installs_from_elsewhere(doc: &Doc<'_>, scope: &Scope<'_>, line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let git = lower.contains("git+")
        || lower.contains("git://")
        || lower.contains(".git")
        || lower.contains("--git")
        || [" github:", " gitlab:", " bitbucket:", " gist:"]
            .iter()
            .any(|p| lower.contains(p));
    let hosts = super::network::hosts_in(line);
    let elsewhere = hosts
        .iter()
        .any(|host| !scope.allows(host) && !super::network::reserved(host));
    elsewhere || (git && doc.kind == Kind::Code) || (hosts.is_empty() && !git)
}

/// Whether `path` is a test's file (`tests/`, `test_x.py`, `x_test.go`, `x.test.ts`, ...).
fn is_test_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    lower
        .split('/')
        .any(|part| matches!(part, "test" | "tests" | "__tests__" | "spec" | "testdata"))
        || name.starts_with("test_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
}

fn line_text(doc: &Doc<'_>, number: u32) -> String {
    doc.lines
        .iter()
        .enumerate()
        .find(|(i, l)| l.number == number || (l.number == 0 && *i as u32 + 1 == number))
        .map(|(_, l)| l.text.clone())
        .unwrap_or_default()
}

/// The findings of the line rules in `text` alone (what a decoded blob holds).
pub(crate) fn in_text(text: &str) -> Vec<(&'static str, Severity)> {
    let folded = shell_folded(text);
    let mut hits: Vec<(&'static str, Severity)> = Vec::new();
    for line in text.lines().chain(folded.lines()) {
        for hit in RULES.set.matches(line).iter() {
            let (id, severity, _, _) = &RULES.rules[hit];
            hits.push((id, *severity));
        }
    }
    if SOURCE.is_match(text) && SINK.is_match(text) {
        hits.push(("exfiltration", Severity::Critical));
    }
    hits
}
