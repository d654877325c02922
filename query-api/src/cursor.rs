//! Page cursors: a connection's `startCursor` and `endCursor`, taken back
//! as `after` and `before`.

use std::ops::Deref;

use async_graphql::Enum;
use async_graphql::connection::{CursorType, OpaqueCursor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::MAX_PAGE;

/// Which way a list's ordering runs: one enum for every list (customers,
/// quotes, users), each with its own default.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum OrderDirection {
    #[default]
    Asc,
    Desc,
}

/// A position in a list, opaque to clients: URL-safe base64 of its JSON,
/// written as async-graphql's `OpaqueCursor` writes it (so a cursor handed
/// out before still reads), with an error that tells a client what a
/// cursor it sent back wrong should have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor<T>(pub T);

/// A cursor argument this API did not hand out, or one changed on the way
/// back (`BAD_USER_INPUT`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the cursor is not one this API returned: pass a page's endCursor as `after`, \
     or its startCursor as `before`, unchanged"
)]
pub struct MalformedCursor;

impl<T: Serialize + DeserializeOwned + Clone> CursorType for PageCursor<T> {
    type Error = MalformedCursor;

    fn decode_cursor(s: &str) -> Result<Self, MalformedCursor> {
        OpaqueCursor::<T>::decode_cursor(s)
            .map(|cursor| Self(cursor.0))
            .map_err(|_| MalformedCursor)
    }

    fn encode_cursor(&self) -> String {
        OpaqueCursor(self.0.clone()).encode_cursor()
    }
}

/// How one page of a keyset-ordered list is read: forward from `after`
/// for `first`, backward from `before` for `last`, one row beyond the page
/// to know whether more exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Read against the list's order (`last` without `first`).
    pub backward: bool,
    /// Rows on the page.
    pub limit: usize,
}

impl Window {
    /// The page `first` or `last` asks for (`first` wins when both are
    /// given), of at most `max` rows and `default` when neither is.
    pub fn new(first: Option<usize>, last: Option<usize>, default: usize, max: usize) -> Self {
        Self {
            backward: last.is_some() && first.is_none(),
            limit: first.or(last).unwrap_or(default).min(max),
        }
    }

    /// The SQL direction the rows are read in (`ASC` or `DESC`), for a
    /// list ordered in `direction`: against it when reading backward.
    pub fn sql_direction(self, direction: OrderDirection) -> &'static str {
        if (direction == OrderDirection::Asc) != self.backward {
            "ASC"
        } else {
            "DESC"
        }
    }

    /// Rows to ask for: the page and one more.
    pub fn fetch(self) -> i64 {
        i64::try_from(self.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    /// The page from the rows read (at most [`Self::fetch`] of them, in
    /// reading order), in the list's order, with whether a page lies
    /// before it and after it.
    pub fn page<R>(self, mut rows: Vec<R>, after: bool, before: bool) -> (Vec<R>, bool, bool) {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        if self.backward {
            rows.reverse();
            (rows, more, before)
        } else {
            (rows, after, more)
        }
    }
}

/// A cursor of a list with several orderings: it names the ordering it
/// was handed out for.
pub trait Ordered {
    /// The ordering's name.
    fn ordering(&self) -> &str;
}

/// Refuses `first` or `last` below 0 or over [`MAX_PAGE`]
/// (`BAD_USER_INPUT` naming the argument); checked before anything else
/// of a list is.
pub fn page_sizes(first: Option<i32>, last: Option<i32>) -> async_graphql::Result<()> {
    let max = i64::try_from(MAX_PAGE).unwrap_or(i64::MAX);
    for (name, value) in [("first", first), ("last", last)] {
        if let Some(value) = value {
            crate::errors::in_range(name, value, 0, max)?;
        }
    }
    Ok(())
}

/// The window of a page of a list in the ordering named `ordering`
/// (20 rows unless `first` or `last` says, at most [`MAX_PAGE`]); a
/// cursor handed out for another ordering is refused: a key of one
/// ordering means nothing in another (`BAD_USER_INPUT`).
pub fn window<C: Ordered>(
    after: Option<&PageCursor<C>>,
    before: Option<&PageCursor<C>>,
    ordering: &str,
    first: Option<usize>,
    last: Option<usize>,
) -> async_graphql::Result<Window> {
    if [after, before]
        .into_iter()
        .flatten()
        .any(|cursor| cursor.0.ordering() != ordering)
    {
        return Err(crate::errors::bad_input(
            "the cursor belongs to another ordering",
        ));
    }
    Ok(Window::new(first, last, 20, MAX_PAGE))
}

impl<T> Deref for PageCursor<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Position {
        offset: usize,
    }

    #[test]
    fn a_cursor_reads_back_as_written_and_as_async_graphql_writes_it() {
        let cursor = PageCursor(Position { offset: 40 });
        let written = cursor.encode_cursor();
        assert_eq!(
            written,
            OpaqueCursor(Position { offset: 40 }).encode_cursor()
        );
        assert_eq!(PageCursor::<Position>::decode_cursor(&written), Ok(cursor));
    }

    #[test]
    fn text_that_is_no_cursor_of_the_list_is_malformed() {
        // Not base64, base64 of no JSON, JSON of another shape.
        let other_shape = OpaqueCursor(vec![1, 2]).encode_cursor();
        for text in ["zzz", "bm90IGpzb24", other_shape.as_str(), ""] {
            assert_eq!(
                PageCursor::<Position>::decode_cursor(text),
                Err(MalformedCursor),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_window_reads_forward_for_first_and_backward_for_last() {
        let forward = Window::new(Some(2), None, 20, 100);
        assert_eq!(
            (forward.backward, forward.limit, forward.fetch()),
            (false, 2, 3)
        );
        assert_eq!(
            (
                forward.sql_direction(OrderDirection::Asc),
                forward.sql_direction(OrderDirection::Desc)
            ),
            ("ASC", "DESC")
        );
        // Three rows read for a page of two: more lie after it.
        assert_eq!(
            forward.page(vec![1, 2, 3], false, false),
            (vec![1, 2], false, true)
        );
        assert_eq!(
            forward.page(vec![1, 2], true, false),
            (vec![1, 2], true, false)
        );

        let backward = Window::new(None, Some(2), 20, 100);
        assert!(backward.backward);
        assert_eq!(
            (
                backward.sql_direction(OrderDirection::Asc),
                backward.sql_direction(OrderDirection::Desc)
            ),
            ("DESC", "ASC")
        );
        // Read from the end: the page comes back in the list's order, with
        // more before it, and after it only when read before a cursor.
        assert_eq!(
            backward.page(vec![9, 8, 7], false, true),
            (vec![8, 9], true, true)
        );
        assert_eq!(
            backward.page(vec![9, 8], false, false),
            (vec![8, 9], false, false)
        );

        assert_eq!(Window::new(Some(3), Some(5), 20, 100).limit, 3);
        assert_eq!(Window::new(None, None, 20, 100).limit, 20);
        assert_eq!(Window::new(Some(500), None, 20, 100).limit, 100);
    }
}
