//! Page cursors: a connection's `startCursor` and `endCursor`, taken back
//! as `after` and `before`.

use std::ops::Deref;

use async_graphql::connection::{CursorType, OpaqueCursor};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
}
