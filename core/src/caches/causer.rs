//! Who caused a run, as its caches know it: the person recorded as its triggerer (the
//! summoner of a summoned run, a push's pusher, a pull request's author, a user who
//! dispatched it, the schedule), and — for a run summoned from an issue or a comment —
//! whose words it acts on. Every cache entry records the first ([`shown`]); the second
//! decides whether a summoned run with secrets writes where its summoner's own summons read
//! ([`words_of`]).
//!
//! Invariants: the issue's author counts as trusted only when it is the summoner, or a
//! Plue user linked to that login (not disabled) who is an admin or holds `writer` or
//! `maintainer` on the repository; anyone else (an outsider, a login the forge did not
//! give, a run whose summoner was not recorded) makes the run's words another's. Nothing
//! here asks the forge: what is unknown is not trusted, and costs only cache hits.

use evaluator::{EvalContext, Event};

use plue_store::{RepoRow, Store, Triggerer};

/// The causer an entry records for a run started by `triggerer`: its forge logins as
/// recorded (`github:alice`, `github:alice github:bob` when two caused it), else its name
/// (a user, `schedule`); `None` when nobody was recorded.
pub fn shown(triggerer: Option<&Triggerer>) -> Option<String> {
    let triggerer = triggerer?;
    Some(
        triggerer
            .forge_login
            .clone()
            .filter(|logins| !logins.is_empty())
            .unwrap_or_else(|| triggerer.name.clone()),
    )
}

/// The author of the words a run from `ctx` acts on when the summoner is `summoner` and
/// they are not the summoner's own: `None` for a run that is not summoned, or summoned on
/// the summoner's own issue. An issue with no author named is `Some("")`.
pub fn foreign_author(ctx: &EvalContext, summoner: Option<&str>) -> Option<String> {
    if !matches!(ctx.event, Event::Issue | Event::Comment) {
        return None;
    }
    let author = ctx
        .issue
        .as_ref()
        .map(|issue| issue.author.trim())
        .unwrap_or_default();
    let own = !author.is_empty() && summoner.is_some_and(|s| s.eq_ignore_ascii_case(author));
    (!own).then(|| author.to_owned())
}

/// Whose words a run of `repo` from `ctx`, started by `triggerer`, acts on when they are
/// neither the summoner's nor a trusted person's (see the module's invariants).
pub async fn words_of(
    store: &Store,
    repo: &RepoRow,
    ctx: &EvalContext,
    triggerer: Option<&Triggerer>,
) -> anyhow::Result<Option<String>> {
    // A summoner is a forge login: a triggerer recorded without one summoned nothing.
    let summoner = triggerer
        .filter(|t| t.forge_login.is_some())
        .map(|t| t.name.as_str());
    let Some(author) = foreign_author(ctx, summoner) else {
        return Ok(None);
    };
    if author.is_empty() {
        return Ok(Some(author));
    }
    let Some(user_id) = store.user_of_forge_login(&repo.forge, &author).await? else {
        return Ok(Some(author));
    };
    let admin = store
        .user_by_id(user_id)
        .await?
        .is_some_and(|user| user.admin && user.disabled_at.is_none());
    let role = store.role_of(repo.id, user_id).await?;
    let writes = matches!(role.as_deref(), Some("writer" | "maintainer"));
    Ok((!admin && !writes).then_some(author))
}

#[cfg(test)]
mod tests {
    use evaluator::context::Issue;

    use super::*;

    fn summoned(event: Event, author: &str) -> EvalContext {
        let mut ctx = EvalContext::local(event, "main");
        ctx.issue = Some(Issue {
            number: 3,
            title: "t".into(),
            body: "b".into(),
            labels: Vec::new(),
            author: author.into(),
            url: String::new(),
        });
        ctx
    }

    #[test]
    fn a_summons_on_anothers_issue_acts_on_their_words() {
        let issue = summoned(Event::Issue, "mallory");
        assert_eq!(
            foreign_author(&issue, Some("alice")).as_deref(),
            Some("mallory")
        );
        assert_eq!(foreign_author(&issue, Some("Mallory")), None);
        assert_eq!(
            foreign_author(&issue, None).as_deref(),
            Some("mallory"),
            "no summoner recorded: not theirs"
        );
        let comment = summoned(Event::Comment, "mallory");
        assert_eq!(
            foreign_author(&comment, Some("alice")).as_deref(),
            Some("mallory")
        );
        let nameless = summoned(Event::Issue, " ");
        assert_eq!(foreign_author(&nameless, Some("")).as_deref(), Some(""));
        // A push acts on its own code: no words of another.
        let push = EvalContext::local(Event::Push, "main");
        assert_eq!(foreign_author(&push, None), None);
    }

    #[test]
    fn an_entry_shows_the_forge_logins_else_the_name() {
        let forge = Triggerer {
            name: "alice".into(),
            user_id: None,
            forge_login: Some("github:alice github:bob".into()),
        };
        assert_eq!(
            shown(Some(&forge)).as_deref(),
            Some("github:alice github:bob")
        );
        let user = Triggerer {
            name: "ops".into(),
            user_id: Some(1),
            forge_login: None,
        };
        assert_eq!(shown(Some(&user)).as_deref(), Some("ops"));
        assert_eq!(shown(None), None);
    }

    #[tokio::test]
    async fn a_writer_linked_to_the_authors_login_is_trusted_and_nobody_else() {
        let (store, _dir) = plue_store::testing::sqlite().await;
        let repo_id = store
            .create_repo(&plue_store::testing::repo("acme/app"))
            .await
            .unwrap()
            .unwrap()
            .id;
        let repo = store.repo_by_id(repo_id).await.unwrap().unwrap();
        let alice = Triggerer {
            name: "alice".into(),
            user_id: None,
            forge_login: Some(format!("{}:alice", repo.forge)),
        };
        let issue = summoned(Event::Issue, "bob");
        assert_eq!(
            words_of(&store, &repo, &issue, Some(&alice))
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        let bob = store
            .create_user(&plue_store::NewUser::person("bob"))
            .await
            .unwrap();
        store
            .link_forge_login(bob, &repo.forge, "bob")
            .await
            .unwrap();
        // Linked, but no role on the repository: still another's words.
        assert_eq!(
            words_of(&store, &repo, &issue, Some(&alice))
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        store.grant_role(repo_id, bob, "writer").await.unwrap();
        assert_eq!(
            words_of(&store, &repo, &issue, Some(&alice)).await.unwrap(),
            None
        );
        // The summoner's own issue.
        let own = summoned(Event::Issue, "alice");
        assert_eq!(
            words_of(&store, &repo, &own, Some(&alice)).await.unwrap(),
            None
        );
    }
}
