use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use super::keys::SigningKey;
use super::*;

fn facts<'a>() -> StepFacts<'a> {
    StepFacts {
        issuer: "https://plue.example.com",
        repository: Some(("acme/app", 7)),
        git_ref: "refs/heads/main",
        sha: "0123456789abcdef0123456789abcdef01234567",
        event: "push",
        workflow: "deploy",
        run_id: 42,
        attempt: 2,
        step: "ship",
        environment: None,
        actor: Some("octocat"),
        trusted: true,
    }
}

#[test]
fn the_subject_is_formed_as_github_forms_it() {
    let push = facts();
    assert_eq!(subject(&push), "repo:acme/app:ref:refs/heads/main");
    let tag = StepFacts {
        git_ref: "refs/tags/v1.2.0",
        ..facts()
    };
    assert_eq!(subject(&tag), "repo:acme/app:ref:refs/tags/v1.2.0");
    let pr = StepFacts {
        event: "pull_request",
        git_ref: "refs/pull/7/head",
        ..facts()
    };
    assert_eq!(subject(&pr), "repo:acme/app:pull_request");
    // The environment wins over the event: a policy for it matches only gated steps.
    let prod = StepFacts {
        event: "pull_request",
        environment: Some("prod"),
        ..facts()
    };
    assert_eq!(subject(&prod), "repo:acme/app:environment:prod");
    let local = StepFacts {
        repository: None,
        ..facts()
    };
    assert_eq!(subject(&local), "local:workflow:deploy");
}

#[test]
fn the_claims_carry_the_run_and_the_step() {
    let claims = Claims::new(&facts(), "sts.amazonaws.com", 1_000, 600, "j1".into());
    let json = serde_json::to_value(&claims).unwrap();
    assert_eq!(json["iss"], "https://plue.example.com");
    assert_eq!(json["aud"], "sts.amazonaws.com");
    assert_eq!(json["sub"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(
        (json["iat"].as_i64(), json["nbf"].as_i64()),
        (Some(1_000), Some(1_000))
    );
    assert_eq!(json["exp"], 1_600);
    assert_eq!(json["repository"], "acme/app");
    assert_eq!(json["repository_owner"], "acme");
    assert_eq!(json["repository_id"], "7");
    assert_eq!(json["ref"], "refs/heads/main");
    assert_eq!(json["ref_type"], "branch");
    assert_eq!(json["run_id"], "42");
    assert_eq!(json["run_attempt"], "2");
    assert_eq!(json["step"], "ship");
    assert_eq!(json["actor"], "octocat");
    assert_eq!(json["trusted"], true);
    assert!(json.get("environment").is_none(), "{json}");
}

#[test]
fn a_token_lives_by_its_step_s_timeout_within_bounds() {
    assert_eq!(ttl_secs(10), MIN_TTL_SECS);
    assert_eq!(ttl_secs(900), 900);
    assert_eq!(ttl_secs(6 * 3600), MAX_TTL_SECS);
    assert_eq!(ttl_secs(u64::MAX), MAX_TTL_SECS);
}

#[test]
fn a_signed_token_verifies_with_the_published_key_and_only_for_its_audience() {
    let (key, pem) = SigningKey::generate().unwrap();
    // The stored form reads back as the same key.
    let again = SigningKey::from_pem(&pem).unwrap();
    assert_eq!(again.kid(), key.kid());
    assert_eq!(again.jwk(), key.jwk());

    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = Claims::new(&facts(), "vault", now, 300, "j2".into());
    let token = key.sign(&claims).unwrap();
    let header = decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(key.kid()));

    let jwk = key.jwk();
    let public =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["vault"]);
    validation.set_issuer(&["https://plue.example.com"]);
    let read = decode::<Claims>(&token, &public, &validation)
        .unwrap()
        .claims;
    assert_eq!(read, claims);

    let mut elsewhere = Validation::new(Algorithm::RS256);
    elsewhere.set_audience(&["sts.amazonaws.com"]);
    assert!(decode::<Claims>(&token, &public, &elsewhere).is_err());
    // Another key does not verify it.
    let (other, _) = SigningKey::generate().unwrap();
    let other = DecodingKey::from_rsa_components(
        other.jwk()["n"].as_str().unwrap(),
        other.jwk()["e"].as_str().unwrap(),
    )
    .unwrap();
    assert!(decode::<Claims>(&token, &other, &validation).is_err());
}

#[test]
fn the_discovery_document_names_the_issuer_and_its_keys() {
    let doc = discovery("https://plue.example.com/");
    assert_eq!(doc["issuer"], "https://plue.example.com");
    assert_eq!(doc["jwks_uri"], "https://plue.example.com/.well-known/jwks");
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");
}

#[test]
fn a_rotation_s_key_signs_only_once_the_key_it_replaces_retires() {
    use plue_store::OidcKeyRow;
    let key = |kid: &str, created_at: i64, retired_at: Option<i64>| OidcKeyRow {
        kid: kid.into(),
        sealed_key: String::new(),
        created_at,
        retired_at,
    };
    let kids = |rows: Vec<OidcKeyRow>| rows.into_iter().map(|r| r.kid).collect::<Vec<_>>();
    // Rotated at 100: the old key retires at 100 + ahead, the new one is published at once.
    let rows = || {
        vec![
            key("new", 100, None),
            key("old", 10, Some(100 + PUBLISHED_AHEAD_MS)),
            key("older", 1, Some(50)),
        ]
    };
    assert_eq!(kids(signer_first(rows(), 200)), ["old", "new", "older"]);
    assert_eq!(
        kids(signer_first(rows(), 100 + PUBLISHED_AHEAD_MS + 1)),
        ["new", "old", "older"]
    );
    // The first key signs at once.
    assert_eq!(
        kids(signer_first(vec![key("first", 5, None)], 5)),
        ["first"]
    );
}
