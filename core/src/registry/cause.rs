//! Who caused a forge event, decided in one place for every trigger path: whether the
//! engine itself is among the logins a delivery names as causing it.
//!
//! A delivery names two kinds of causer: whose code or text it is (a push's pusher, a pull
//! request's author, an issue's sender, a comment's author) and who acted on it (the
//! `sender` who labelled, edited, reopened, pushed onto somebody's pull request, or pushed
//! where the pusher is another name). [`Causers`] gathers all of them per event kind; the
//! engine is among them when the forge names the account the engine writes as (its token's
//! `GET /user`, or the App's `<slug>[bot]`) for any of them, or when the forge cannot say
//! who the engine is (then any of them might be).
//!
//! Invariants:
//! - A run never gets more trust than every causer has: an event the engine caused — a
//!   label it added for an accepted proposal, a comment it wrote, the branch it pushed, the
//!   pull request it opened, a push onto a person's pull request — runs like a fork's (no
//!   secrets, no environment, fork-accepting runners) when it is a push or pull request,
//!   whoever else the payload names, and summons nothing when it is an issue or comment.
//!   A person's own act on the same code (their push, their label) is judged as theirs.
//! - The decision reads only what the payload names and who the engine is; a login the
//!   payload did not give (`None`) cannot make an event the engine's unless the engine
//!   does not know who it is (then nothing is trusted).
//! - Reviews and check runs (`pull_request_review`, `check_run`, `check_suite`) start
//!   nothing whoever caused them: the payload reader ignores them.

use plue_forge::payload::{CommentEvent, IssueEvent, PullRequestEvent, Push};
use plue_forge::permission::EngineIdentity;
use plue_store::RepoRow;

use super::Registry;

/// Every login a delivery names as causing it, in the payload's order (the code's or
/// text's author first). `None` stands for a causer the payload names with no valid login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Causers {
    logins: Vec<Option<String>>,
}

impl Causers {
    /// A push: the pusher and whoever else the payload names as pushing.
    pub(super) fn of_push(push: &Push) -> Causers {
        Causers::of(push.actor.as_deref(), &push.co_actors)
    }

    /// A pull request event: its author and the `sender` when somebody else (who labelled
    /// it, pushed onto it, reopened it, ...).
    pub(super) fn of_pull_request(pr: &PullRequestEvent) -> Causers {
        Causers::of(pr.actor.as_deref(), &pr.co_actors)
    }

    /// An `issues` event: its sender (who opened the issue, who added the label).
    pub(super) fn of_issue(event: &IssueEvent) -> Causers {
        Causers {
            logins: vec![event.sender.login.clone()],
        }
    }

    /// An `issue_comment` event: the commenter and the sender when somebody else (who
    /// edited or deleted the comment).
    pub(super) fn of_comment(event: &CommentEvent) -> Causers {
        let mut logins = vec![event.commenter.login.clone()];
        logins.extend(event.sender.iter().map(|s| s.login.clone()));
        Causers { logins }
    }

    fn of(actor: Option<&str>, co_actors: &[String]) -> Causers {
        let mut logins = vec![actor.map(str::to_string)];
        logins.extend(co_actors.iter().cloned().map(Some));
        Causers { logins }
    }

    /// The causers as written, `(unnamed)` for a missing login.
    fn shown(&self) -> String {
        let names: Vec<&str> = self
            .logins
            .iter()
            .map(|l| l.as_deref().unwrap_or("(unnamed)"))
            .collect();
        names.join(", ")
    }
}

/// Whether the engine is among an event's causers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cause {
    /// People (or other bots) only: each is judged on its own.
    People,
    /// The engine is among them, or might be; why, as a sentence naming the repository.
    Engine(String),
}

impl Cause {
    pub(super) fn is_engine(&self) -> bool {
        matches!(self, Cause::Engine(_))
    }
}

/// The decision itself, pure: `identity` is who the engine is on `repo`'s forge.
pub(super) fn decide(repo: &str, identity: &EngineIdentity, causers: &Causers) -> Cause {
    match identity {
        EngineIdentity::Unknown(why) => Cause::Engine(format!(
            "{repo}: Plue cannot tell which forge account it writes as ({why}): this event by {} might be its own",
            causers.shown()
        )),
        EngineIdentity::NoToken => Cause::People,
        EngineIdentity::Known(engine) => {
            match causers
                .logins
                .iter()
                .flatten()
                .find(|login| identity.might_be(Some(login)))
            {
                Some(login) => Cause::Engine(format!(
                    "{repo}: {login} is the account Plue writes to the forge as ({engine}), and it caused this event"
                )),
                None => Cause::People,
            }
        }
    }
}

impl Registry {
    /// Whether the engine is among `causers` of an event on `repo` (see the module's
    /// invariants). Every trigger path asks this, and only this.
    pub(super) async fn cause(&self, repo: &RepoRow, causers: &Causers) -> Cause {
        let identity = self.engine_identity(repo).await;
        let cause = decide(&repo.name, &identity, causers);
        if let Cause::Engine(why) = &cause {
            tracing::info!(repository = %repo.name, "{why}: it gets the trust of no one");
        }
        cause
    }
}

#[cfg(test)]
mod tests {
    use plue_forge::payload::{self, ForgeEvent};
    use plue_forge::Forge;

    use super::*;

    const ENGINE: &str = "plue-app[bot]";

    fn known() -> EngineIdentity {
        EngineIdentity::Known(ENGINE.into())
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../engine/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn parse(event: &str, body: &serde_json::Value) -> ForgeEvent {
        payload::parse(Forge::GitHub, event, body.to_string().as_bytes()).unwrap()
    }

    fn engine_caused(causers: &Causers) -> bool {
        decide("octo/app", &known(), causers).is_engine()
    }

    #[test]
    fn a_push_is_the_engines_when_it_is_the_pusher_or_the_sender() {
        let mut body = fixture("github/push-new-branch.json");
        let ForgeEvent::Push(push) = parse("push", &body) else {
            panic!("a push")
        };
        assert!(!engine_caused(&Causers::of_push(&push)), "a person's push");
        body["pusher"]["name"] = ENGINE.into();
        body["sender"]["login"] = ENGINE.into();
        let ForgeEvent::Push(push) = parse("push", &body) else {
            panic!("a push")
        };
        assert!(engine_caused(&Causers::of_push(&push)), "the engine's push");
        // A payload whose pusher and sender disagree: the engine named as either.
        body["pusher"]["name"] = "Codertocat".into();
        let ForgeEvent::Push(push) = parse("push", &body) else {
            panic!("a push")
        };
        assert!(engine_caused(&Causers::of_push(&push)), "{push:?}");
    }

    #[test]
    fn a_label_the_engine_adds_to_a_persons_pull_request_is_the_engines() {
        let mut body = fixture("github/pull_request-opened.json");
        let ForgeEvent::PullRequest(opened) = parse("pull_request", &body) else {
            panic!("a pull request")
        };
        assert!(!engine_caused(&Causers::of_pull_request(&opened)));
        // Issue 69: the engine labelled a writer's pull request for an accepted proposal;
        // the author is a person, the sender the engine.
        body["action"] = "labeled".into();
        body["label"] = serde_json::json!({"name": "deploy"});
        body["sender"]["login"] = ENGINE.into();
        body["sender"]["type"] = "Bot".into();
        let ForgeEvent::PullRequest(labeled) = parse("pull_request", &body) else {
            panic!("a pull request")
        };
        assert_ne!(labeled.actor.as_deref(), Some(ENGINE));
        assert!(engine_caused(&Causers::of_pull_request(&labeled)));
        // The pull request the engine opened, labelled by a person: still the engine's code.
        body["pull_request"]["user"]["login"] = ENGINE.into();
        body["sender"]["login"] = "Codertocat".into();
        let ForgeEvent::PullRequest(by_person) = parse("pull_request", &body) else {
            panic!("a pull request")
        };
        assert!(engine_caused(&Causers::of_pull_request(&by_person)));
    }

    #[test]
    fn an_issue_event_is_the_engines_when_it_sent_it() {
        let mut body = fixture("github/issues-labeled.json");
        let ForgeEvent::Issue(issue) = parse("issues", &body) else {
            panic!("an issue event")
        };
        assert!(!engine_caused(&Causers::of_issue(&issue)));
        body["sender"]["login"] = ENGINE.into();
        let ForgeEvent::Issue(issue) = parse("issues", &body) else {
            panic!("an issue event")
        };
        assert!(engine_caused(&Causers::of_issue(&issue)));
    }

    #[test]
    fn a_comment_is_the_engines_when_it_wrote_or_edited_it() {
        let mut body = fixture("github/issue_comment-created.json");
        let ForgeEvent::Comment(comment) = parse("issue_comment", &body) else {
            panic!("a comment")
        };
        assert!(!engine_caused(&Causers::of_comment(&comment)));
        body["sender"]["login"] = ENGINE.into();
        body["action"] = "edited".into();
        let ForgeEvent::Comment(edited) = parse("issue_comment", &body) else {
            panic!("a comment")
        };
        assert!(engine_caused(&Causers::of_comment(&edited)), "{edited:?}");
        body["comment"]["user"]["login"] = ENGINE.into();
        body["sender"]["login"] = "Codertocat".into();
        let ForgeEvent::Comment(written) = parse("issue_comment", &body) else {
            panic!("a comment")
        };
        assert!(engine_caused(&Causers::of_comment(&written)));
    }

    #[test]
    fn an_engine_that_does_not_know_itself_might_be_anyone_and_one_without_a_token_is_no_one() {
        let people = Causers::of(Some("Codertocat"), &[]);
        let unknown = EngineIdentity::Unknown("GET /user: HTTP 403".into());
        let Cause::Engine(why) = decide("octo/app", &unknown, &people) else {
            panic!("unknown trusts nothing")
        };
        assert!(
            why.contains("cannot tell") && why.contains("Codertocat"),
            "{why}"
        );
        assert!(decide("octo/app", &unknown, &Causers::of(None, &[])).is_engine());
        let engine = Causers::of(Some(ENGINE), &[]);
        assert_eq!(
            decide("octo/app", &EngineIdentity::NoToken, &engine),
            Cause::People
        );
        // Case does not hide the engine; an unnamed causer is not the engine when it is known.
        assert!(engine_caused(&Causers::of(Some("PLUE-APP[BOT]"), &[])));
        assert!(!engine_caused(&Causers::of(None, &[])));
    }
}
