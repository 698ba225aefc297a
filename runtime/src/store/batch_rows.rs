//! The rows of the group-commit statements, each kind declared once ([`batch_rows!`]).
//!
//! PostgreSQL receives a batch column by column: one typed array parameter per column, sent in
//! the binary protocol and read back as rows with `unnest` (`$1::text[], $2::bigint[], …`).
//! The statement's text, and its prepared plan, is then the same for any batch, and the
//! database decodes each value with a copy instead of lexing a JSON document: with the rows as
//! one JSON parameter, parsing it was about a sixth of PostgreSQL's time under load. SQLite has
//! no arrays; it reads the rows as one JSON parameter (`jsonb_each`), serialised from the row
//! struct.

/// Declares a row struct `$row` (with `Serialize`, for SQLite's JSON parameter) and `$cols`,
/// the same rows column by column, which binds one PostgreSQL array per column in declaration
/// order. `$sql` is each column's PostgreSQL type. One list of fields makes both, so the
/// columns a statement names and the values bound cannot drift apart.
macro_rules! batch_rows {
    ($(#[$meta:meta])* $row:ident, $cols:ident { $($name:ident: $ty:ty => $sql:literal,)* }) => {
        $(#[$meta])*
        #[derive(serde::Serialize, Default)]
        pub(super) struct $row<'a> {
            $(pub(super) $name: $ty,)*
        }

        /// The rows column by column (see `batch_rows.rs`).
        #[derive(Default)]
        pub(super) struct $cols<'a> {
            $($name: Vec<$ty>,)*
        }

        impl<'a> $cols<'a> {
            /// The columns' names and PostgreSQL types, in binding order.
            pub(super) const COLUMNS: &'static [(&'static str, &'static str)] = &[$((stringify!($name), $sql),)*];

            /// Appends a row.
            pub(super) fn push(&mut self, row: $row<'a>) {
                $(self.$name.push(row.$name);)*
            }

            /// Binds the columns' arrays, in [`Self::COLUMNS`] order.
            pub(super) fn bind<'q>(
                self,
                query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
            ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
                query $(.bind(self.$name))*
            }
        }
    };
}

/// The rows of `columns`' arrays, bound from `$first` on, as `alias`:
/// `unnest($first::text[], …) AS alias(name, …)` (PostgreSQL).
pub(super) fn unnest(first: usize, columns: &[(&str, &str)], alias: &str) -> String {
    let arrays: Vec<String> = columns.iter().enumerate().map(|(i, (_, ty))| format!("${}::{ty}[]", first + i)).collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    format!("unnest({}) AS {alias}({})", arrays.join(", "), names.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unnest_numbers_each_column_from_the_first() {
        assert_eq!(super::unnest(3, &[("id", "text"), ("n", "bigint")], "v"), "unnest($3::text[], $4::bigint[]) AS v(id, n)");
    }
}
