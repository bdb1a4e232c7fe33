//! The conditions of a read with optional filters (a dashboard page, the audit log), built
//! from the filters present only.
//!
//! Invariants:
//! - An absent filter is left out of the statement's text, never bound as NULL and tested
//!   (`($1 IS NULL OR column = $1)`): PostgreSQL plans the store's statements once per
//!   connection with generic plans (`postgres_pool::PLANNING`), and a generic plan cannot
//!   tell which side of such an `OR` holds, so it could use no index for the column — a
//!   keyset cursor (`id < $n`) would walk the whole primary key from the newest row.
//! - Every value is bound as a parameter, numbered in the order it was added; a statement
//!   has one text per set of filters present, so each of those texts gets its own plan.

use std::fmt::Write;

/// A value bound to a condition.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    Text(String),
    Int(i64),
}

/// The conditions of one read, in the order added, with their values.
#[derive(Debug)]
pub(crate) struct Conditions {
    backend: &'static str,
    sql: Vec<String>,
    binds: Vec<Bound>,
}

impl Conditions {
    /// No condition yet, for a statement run on `backend` (`Store::backend`).
    pub(crate) fn new(backend: &'static str) -> Conditions {
        Conditions {
            backend,
            sql: Vec::new(),
            binds: Vec::new(),
        }
    }

    /// The placeholder the next bound value takes.
    pub(crate) fn next_placeholder(&self) -> String {
        format!("${}", self.binds.len() + 1)
    }

    /// A condition on `value` when it is present: `condition` is given its placeholder.
    pub(crate) fn text(&mut self, value: Option<&str>, condition: impl Fn(&str) -> String) {
        if let Some(value) = value {
            self.push(Bound::Text(value.to_string()), condition);
        }
    }

    /// [`Conditions::text`] for a number.
    pub(crate) fn int(&mut self, value: Option<i64>, condition: impl Fn(&str) -> String) {
        if let Some(value) = value {
            self.push(Bound::Int(value), condition);
        }
    }

    /// `column` is one of `ids` when they are given (an empty list matches nothing): the ids
    /// are one parameter, a JSON array read back by the backend's JSON functions.
    pub(crate) fn one_of(&mut self, column: &str, ids: Option<&[i64]>) {
        let Some(ids) = ids else {
            return;
        };
        let json = serde_json::to_string(ids).expect("ids serialize");
        let backend = self.backend;
        self.push(Bound::Text(json), |n| match backend {
            "postgres" => format!(
                "{column} IN (SELECT value::BIGINT FROM json_array_elements_text({n}::JSON))"
            ),
            _ => format!("{column} IN (SELECT value FROM json_each({n}))"),
        });
    }

    fn push(&mut self, bound: Bound, condition: impl Fn(&str) -> String) {
        let placeholder = self.next_placeholder();
        self.binds.push(bound);
        self.sql.push(condition(&placeholder));
    }

    /// `WHERE` and the conditions joined by `AND`, or nothing when there are none.
    pub(crate) fn where_clause(&self) -> String {
        let mut clause = String::new();
        for (i, condition) in self.sql.iter().enumerate() {
            let joint = if i == 0 { "WHERE " } else { " AND " };
            write!(clause, "{joint}{condition}").expect("writing to a String");
        }
        clause
    }

    /// The values to bind, in placeholder order.
    pub(crate) fn binds(&self) -> &[Bound] {
        &self.binds
    }
}

/// Binds `conditions`' values to an sqlx query, in order (any backend's query type).
macro_rules! bind_conditions {
    ($query:expr, $conditions:expr) => {{
        let mut query = $query;
        for bound in $conditions.binds() {
            query = match bound {
                $crate::filters::Bound::Text(text) => query.bind(text.as_str()),
                $crate::filters::Bound::Int(number) => query.bind(*number),
            };
        }
        query
    }};
}
pub(crate) use bind_conditions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_present_are_written_and_numbered_in_order() {
        let mut conditions = Conditions::new("postgres");
        conditions.text(None, |n| format!("a = {n}"));
        conditions.text(Some("x"), |n| format!("b = {n}"));
        conditions.int(None, |n| format!("c < {n}"));
        conditions.int(Some(7), |n| format!("d < {n}"));
        conditions.one_of("e", Some(&[1, 2]));
        assert_eq!(
            conditions.where_clause(),
            "WHERE b = $1 AND d < $2 AND e IN \
             (SELECT value::BIGINT FROM json_array_elements_text($3::JSON))"
        );
        assert_eq!(conditions.next_placeholder(), "$4");
        assert!(matches!(
            conditions.binds(),
            [Bound::Text(b), Bound::Int(7), Bound::Text(ids)] if b == "x" && ids == "[1,2]"
        ));
    }

    #[test]
    fn no_filter_writes_no_where() {
        let mut conditions = Conditions::new("sqlite");
        conditions.one_of("e", None);
        assert_eq!(conditions.where_clause(), "");
        assert_eq!(conditions.next_placeholder(), "$1");
    }
}
