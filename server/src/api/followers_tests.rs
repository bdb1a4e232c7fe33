//! Tests of [`super`]: the caps, who a client is, and the leash on a stream.

use super::*;

fn followers(per_step: usize, per_client: usize, total: usize) -> Arc<Followers> {
    Arc::new(Followers::new(FollowerLimits {
        per_step,
        per_client,
        per_client_step: per_client,
        total,
        reserved_per_step: 0,
        reserved_total: 0,
        ..FollowerLimits::default()
    }))
}

fn at(address: &str) -> Who {
    Who::anonymous(Some(address.parse().unwrap()))
}

#[test]
fn each_cap_refuses_the_follower_past_it_and_dropping_frees_the_place() {
    let f = followers(2, 3, 4);
    let (a, b) = (at("10.0.0.1"), at("10.0.0.2"));
    let one = f.enter(1, a.clone()).unwrap();
    let _two = f.enter(1, a.clone()).unwrap();
    assert_eq!(f.enter(1, b.clone()).unwrap_err(), Refused::Step(2));
    let _three = f.enter(2, a.clone()).unwrap();
    assert_eq!(f.enter(3, a.clone()).unwrap_err(), Refused::Client(3));
    let _four = f.enter(3, b).unwrap();
    assert_eq!(
        f.enter(4, Who::Anonymous(None)).unwrap_err(),
        Refused::Total(4)
    );
    assert_eq!(f.live(), 4);
    drop(one);
    assert_eq!(f.live(), 3);
    let _again = f.enter(1, a).unwrap();
}

#[test]
fn counts_go_back_to_nothing() {
    let f = followers(10, 10, 10);
    let guards: Vec<_> = (0..10)
        .map(|i| {
            let who = match i % 3 {
                0 => Who::Anonymous(None),
                1 => at("10.0.0.1"),
                _ => Who::User(1),
            };
            f.enter(i % 3, who).unwrap()
        })
        .collect();
    assert_eq!(f.live(), 10);
    drop(guards);
    assert_eq!(f.live(), 0);
    let counts = f.lock();
    assert!(counts.by_step.is_empty() && counts.by_client.is_empty());
    assert!(counts.by_client_step.is_empty() && counts.anonymous == 0);
}

// The attack: anonymous clients from as many addresses as they like fill a step. The
// reserved places stay free for signed-in users; only they hit the step's cap.
#[test]
fn anonymous_clients_from_any_number_of_addresses_never_take_the_reserved_places() {
    let f = Arc::new(Followers::new(FollowerLimits::default()));
    let mut held = Vec::new();
    for i in 0..1000u32 {
        let who = Who::anonymous(Some(IpAddr::from(i.to_be_bytes())));
        match f.enter(7, who) {
            Ok(guard) => held.push(guard),
            Err(refused) => assert_eq!(refused, Refused::AnonymousStep(48)),
        }
    }
    assert_eq!(held.len(), MAX_FOLLOWERS_PER_STEP - RESERVED_PER_STEP);
    for user in 0..RESERVED_PER_STEP {
        held.push(f.enter(7, Who::User(100 + user as i64)).unwrap());
    }
    assert_eq!(f.enter(7, Who::User(99)).unwrap_err(), Refused::Step(64));
    // In all, too: anonymous followers of many steps leave the reserved total free.
    let f = Arc::new(Followers::new(FollowerLimits::default()));
    let mut held = Vec::new();
    for i in 0..2000u32 {
        let who = Who::anonymous(Some(IpAddr::from(i.to_be_bytes())));
        if let Ok(guard) = f.enter(i64::from(i), who) {
            held.push(guard);
        }
    }
    assert_eq!(held.len(), MAX_FOLLOWERS - RESERVED_TOTAL);
    let signed_in = f.enter(1, Who::User(2)).unwrap();
    assert_eq!(signed_in.lifetime(), None);
    assert_eq!(held[0].lifetime(), Some(ANONYMOUS_LIFETIME));
}

// regression: one client with two addresses took all 64 places of a step.
#[test]
fn one_client_takes_few_places_of_a_step_and_an_ipv6_host_is_one_client() {
    let f = Arc::new(Followers::new(FollowerLimits::default()));
    let mut held = Vec::new();
    for address in ["10.0.0.1", "10.0.0.2"] {
        while let Ok(guard) = f.enter(1, at(address)) {
            held.push(guard);
        }
    }
    assert_eq!(held.len(), 2 * MAX_FOLLOWERS_PER_CLIENT_STEP);
    // Every address of one /64 is one client.
    let mut v6 = 0;
    for i in 0..100u16 {
        if let Ok(guard) = f.enter(2, at(&format!("2001:db8::{i:x}"))) {
            held.push(guard);
            v6 += 1;
        }
    }
    assert_eq!(v6, MAX_FOLLOWERS_PER_CLIENT_STEP);
    assert_eq!(at("::ffff:10.0.0.1"), at("10.0.0.1"));
}

// A user is one client whichever of its tokens it uses and wherever it connects from; the
// anonymous are their addresses, and so is everyone on an engine without users.
#[test]
fn a_signed_in_caller_is_counted_by_its_user() {
    use crate::access::{Caller, Scope, User};
    let signed = |id: i64, token_id: i64| Caller::Signed {
        user: User {
            id,
            name: format!("user-{id}"),
            admin: false,
            kind: "person".into(),
        },
        scope: Scope::default(),
        token_id: Some(token_id),
    };
    let here = Some("10.0.0.1".parse().unwrap());
    let there = Some("10.9.9.9".parse().unwrap());
    assert_eq!(
        Who::of_caller(&signed(7, 1), here),
        Who::of_caller(&signed(7, 2), there)
    );
    assert_ne!(
        Who::of_caller(&signed(7, 1), here),
        Who::of_caller(&signed(8, 3), here)
    );
    assert!(Who::of_caller(&signed(7, 1), None).signed_in());
    assert_eq!(Who::of_caller(&Caller::Anonymous, here), at("10.0.0.1"));
    assert_eq!(Who::of_caller(&Caller::Embedded, here), at("10.0.0.1"));
    let f = followers(100, 3, 100);
    let held: Vec<_> = (0..3)
        .map(|i| f.enter(i, Who::of_caller(&signed(7, i), here)).unwrap())
        .collect();
    assert_eq!(
        f.enter(9, Who::of_caller(&signed(7, 99), there))
            .unwrap_err(),
        Refused::Client(3),
        "a fourth token of the same user is the same client"
    );
    drop(held);
}

#[test]
fn users_are_counted_wherever_they_connect_from() {
    let f = followers(100, 3, 100);
    let held: Vec<_> = (0..3).map(|i| f.enter(i, Who::User(1)).unwrap()).collect();
    assert_eq!(f.enter(9, Who::User(1)).unwrap_err(), Refused::Client(3));
    assert!(f.enter(9, Who::User(2)).is_ok());
    drop(held);
}

fn proxies(networks: &[&str]) -> TrustedProxies {
    TrustedProxies::new(
        networks
            .iter()
            .map(|n| parse_trusted_proxy(n).unwrap())
            .collect(),
    )
}

fn forwarded(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append("x-forwarded-for", value.parse().unwrap());
    }
    headers
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// The attack: a client writes the address it wants to be counted as into the header.
#[test]
fn forwarded_for_is_read_only_from_trusted_proxies_and_only_up_to_the_first_untrusted_hop() {
    let none = TrustedProxies::default();
    let spoofed = forwarded(&["203.0.113.9"]);
    assert_eq!(
        none.client(ip("198.51.100.7"), &spoofed),
        ip("198.51.100.7")
    );
    let ingress = proxies(&["10.0.0.0/8", "fd00::/8"]);
    // Not from the ingress: the header is the client's own words.
    assert_eq!(
        ingress.client(ip("198.51.100.7"), &spoofed),
        ip("198.51.100.7")
    );
    // From the ingress: the right-most address the proxies did not write.
    assert_eq!(
        ingress.client(ip("10.1.2.3"), &forwarded(&["1.1.1.1, 198.51.100.7"])),
        ip("198.51.100.7")
    );
    assert_eq!(
        ingress.client(
            ip("10.1.2.3"),
            &forwarded(&["6.6.6.6, 198.51.100.7", "10.9.9.9"])
        ),
        ip("198.51.100.7"),
        "several headers are one list; trusted hops are skipped"
    );
    assert_eq!(
        ingress.client(ip("::ffff:10.1.2.3"), &forwarded(&["[2001:db8::1]:443"])),
        ip("2001:db8::1")
    );
    // Nothing usable: the last trusted hop.
    assert_eq!(
        ingress.client(ip("10.1.2.3"), &HeaderMap::new()),
        ip("10.1.2.3")
    );
    assert_eq!(
        ingress.client(ip("10.1.2.3"), &forwarded(&["1.1.1.1, junk, 10.0.0.5"])),
        ip("10.0.0.5")
    );
    let followers = Followers::default().trusting(ingress);
    assert_eq!(
        followers.client_address(Some("10.1.2.3:9".parse().unwrap()), &spoofed),
        Some(ip("203.0.113.9"))
    );
}

#[test]
fn trusted_proxies_are_networks_or_addresses() {
    assert_eq!(
        parse_trusted_proxy("10.1.2.3/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        parse_trusted_proxy("192.0.2.1").unwrap().to_string(),
        "192.0.2.1/32"
    );
    assert_eq!(parse_trusted_proxy("::1").unwrap().to_string(), "::1/128");
    assert_eq!(
        parse_trusted_proxy("ingress").unwrap_err().to_string(),
        "'ingress' is not a network (like 10.0.0.0/8 or fd00::/8) or an address"
    );
    assert!(parse_trusted_proxy("10.0.0.0/33").is_err());
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let limits = FollowerLimits::default();
    let mut wait = Duration::ZERO;
    let mut seen = Vec::new();
    for _ in 0..8 {
        wait = limits.next_backoff(wait);
        seen.push(wait.as_millis());
    }
    assert_eq!(seen, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
}

// The attack (issue 30): one owner — however many tokens it minted, they all count as it —
// takes the places kept for signed-in users. It gets at most half of them, on a step and
// in all, and every other token holder still follows.
#[test]
fn one_owner_takes_at_most_half_of_the_reserved_share() {
    let f = Arc::new(Followers::new(FollowerLimits {
        per_client_step: 100,
        per_client: 1000,
        ..FollowerLimits::default()
    }));
    let mut held = Vec::new();
    for i in 0..48u32 {
        held.push(
            f.enter(1, Who::anonymous(Some(IpAddr::from(i.to_be_bytes()))))
                .unwrap(),
        );
    }
    let mallory = Who::User(66);
    while let Ok(guard) = f.enter(1, mallory.clone()) {
        held.push(guard);
    }
    assert_eq!(held.len(), 48 + RESERVED_PER_STEP / 2);
    assert_eq!(
        f.enter(1, mallory.clone()).unwrap_err(),
        Refused::ClientStep(RESERVED_PER_STEP / 2)
    );
    for _ in 0..RESERVED_PER_STEP / 2 {
        held.push(f.enter(1, Who::User(1)).unwrap());
    }
    // In all.
    let f = Arc::new(Followers::new(FollowerLimits {
        per_client: 10_000,
        per_client_step: 10_000,
        per_step: 10_000,
        reserved_per_step: 0,
        ..FollowerLimits::default()
    }));
    let mut held = Vec::new();
    for i in 0..2000i64 {
        if let Ok(guard) = f.enter(i, mallory.clone()) {
            held.push(guard);
        }
    }
    assert_eq!(held.len(), RESERVED_TOTAL / 2);
    held.push(f.enter(1, Who::User(1)).unwrap());
    // The defaults bind first: 8 of a step, 32 in all.
    let f = Arc::new(Followers::new(FollowerLimits::default()));
    let mut held = Vec::new();
    for step in 0..10 {
        while let Ok(guard) = f.enter(step, mallory.clone()) {
            held.push(guard);
        }
    }
    assert_eq!(held.len(), MAX_FOLLOWERS_PER_CLIENT);
    assert!(f.enter(0, Who::User(2)).is_ok());
}

// The attack (issue 30): a client that stops reading keeps hyper from polling its stream,
// so a lifetime checked inside the stream never ended it. The leash frees the place at the
// lifetime (anonymous) or the idle-send timeout (anyone) with the stream never polled.
#[tokio::test]
async fn a_stream_never_polled_frees_its_place_at_its_lifetime_or_idle_timeout() {
    use futures::StreamExt;
    use std::task::Poll;
    let f = Arc::new(Followers::new(FollowerLimits {
        anonymous_lifetime: Duration::from_millis(600),
        idle_send_timeout: Duration::from_millis(300),
        heartbeat: Duration::from_millis(50),
        ..FollowerLimits::default()
    }));
    let pending = futures::stream::pending::<()>;
    let mut anonymous = Box::pin(leash(pending(), f.enter(1, at("10.0.0.1")).unwrap()));
    let mut signed_in = Box::pin(leash(pending(), f.enter(1, Who::User(1)).unwrap()));
    assert_eq!(f.live(), 2);
    // Both keep reading: the signed-in one stays, the anonymous one ends at its lifetime.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(futures::poll!(signed_in.next()).is_pending());
        let _ = futures::poll!(anonymous.next());
    }
    assert_eq!(f.live(), 1, "the anonymous stream outlived its lifetime");
    assert_eq!(futures::poll!(anonymous.next()), Poll::Ready(None));
    // The signed-in one stops reading: freed at the idle timeout, never polled again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(f.live(), 0, "a stream nobody reads held its place");
    assert_eq!(futures::poll!(signed_in.next()), Poll::Ready(None));
    // Never polled at all: freed at the idle timeout, whoever holds it.
    let _never = leash(pending(), f.enter(1, at("10.0.0.2")).unwrap());
    let _never_signed_in = leash(pending(), f.enter(1, Who::User(1)).unwrap());
    assert_eq!(f.live(), 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(f.live(), 0);
    // Dropping a stream frees its place at once.
    let dropped = leash(pending(), f.enter(1, at("10.0.0.3")).unwrap());
    assert_eq!(f.live(), 1);
    drop(dropped);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(f.live(), 0);
}
