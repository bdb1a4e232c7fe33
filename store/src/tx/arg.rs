//! One bound argument of a [`super::Statement`], and what converts into one.
//!
//! Invariant: every value the store binds is one of these few kinds, so the two backends'
//! binders ([`super::postgres_query`], the SQLite session's) each match them exhaustively
//! and an argument can never reach SQL as text spliced into it.

use std::borrow::Cow;

use plue_types::status::{
    AttemptStatus, CommitState, DebugSessionStatus, InstallationState, ProposalState, RunState,
    RunStatus, StepStatus,
};

/// One argument of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<Cow<'a, str>>),
    Bool(Option<bool>),
    Bytes(Option<&'a [u8]>),
    /// A set of texts to match with `= ANY($N)` on PostgreSQL and
    /// `IN (SELECT value FROM json_each($N))` on SQLite (an array in its order: `unnest`
    /// zips several).
    TextSet(&'a [String]),
    /// A set of integers, matched the same way (`bigint[]` on PostgreSQL).
    IntSet(&'a [i64]),
    /// A set of borrowed texts, as [`Arg::TextSet`].
    StrSet(&'a [&'a str]),
}

impl<'a> From<&'a Vec<i64>> for Arg<'a> {
    fn from(values: &'a Vec<i64>) -> Self {
        Arg::IntSet(values)
    }
}

impl<'a> From<&'a [i64]> for Arg<'a> {
    fn from(values: &'a [i64]) -> Self {
        Arg::IntSet(values)
    }
}

impl<'a> From<&'a Vec<&'a str>> for Arg<'a> {
    fn from(values: &'a Vec<&'a str>) -> Self {
        Arg::StrSet(values)
    }
}

impl<'a> From<&'a Vec<String>> for Arg<'a> {
    fn from(values: &'a Vec<String>) -> Self {
        Arg::TextSet(values)
    }
}

/// `From` for a value and its `Option`, converting through `$into`.
macro_rules! arg_from {
    ($variant:ident, $($ty:ty => $into:expr),+ $(,)?) => {$(
        impl<'a> From<$ty> for Arg<'a> {
            fn from(value: $ty) -> Self {
                Arg::$variant(Some(($into)(value)))
            }
        }
        impl<'a> From<Option<$ty>> for Arg<'a> {
            fn from(value: Option<$ty>) -> Self {
                Arg::$variant(value.map($into))
            }
        }
    )+};
}

arg_from!(Int,
    i64 => |v| v,
    i32 => i64::from,
    u32 => i64::from,
);
arg_from!(Real, f64 => |v| v);
arg_from!(Bool, bool => |v| v);
arg_from!(Text,
    &'a str => Cow::Borrowed,
    &'a String => |v: &'a String| Cow::Borrowed(v.as_str()),
    String => Cow::Owned,
    StepStatus => |v: StepStatus| Cow::Borrowed(v.as_str()),
    RunStatus => |v: RunStatus| Cow::Borrowed(v.as_str()),
    AttemptStatus => |v: AttemptStatus| Cow::Borrowed(v.as_str()),
    RunState => |v: RunState| Cow::Borrowed(v.as_str()),
    CommitState => |v: CommitState| Cow::Borrowed(v.as_str()),
    ProposalState => |v: ProposalState| Cow::Borrowed(v.as_str()),
    DebugSessionStatus => |v: DebugSessionStatus| Cow::Borrowed(v.as_str()),
    InstallationState => |v: InstallationState| Cow::Borrowed(v.as_str()),
);
arg_from!(Bytes,
    &'a [u8] => |v| v,
    &'a Vec<u8> => |v: &'a Vec<u8>| v.as_slice(),
);

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Arg::Text(value.as_deref().map(Cow::Borrowed))
    }
}
