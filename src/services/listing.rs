//! Paged lists (users, audit events): by page number, or by keyset cursor. A cursor holds
//! the sort key of the last item of its page and is bound to the filters and order it was
//! made under, so that it cannot be replayed against another list.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::ServiceError;
use crate::domain::Page;

/// Where listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// 1-based page number.
    Page(u32),
    /// The `next_cursor` of the page before.
    After(String),
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// `None` when the page was asked for by cursor.
    pub page: Option<u32>,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
    /// Where the next page starts; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// A cursor that this list did not make, or whose fields do not parse.
pub(super) fn bad_cursor() -> ServiceError {
    ServiceError::BadQuery {
        parameter: "after",
        message: "is not a cursor of this list (with these filters and this sort)",
    }
}

/// Makes and reads the cursors of one list, as bound to `binding` (its filters and order).
pub(super) struct Cursors {
    fingerprint: String,
}

impl Cursors {
    pub fn new(binding: &str) -> Self {
        Self {
            fingerprint: hex::encode(&Sha256::digest(binding.as_bytes())[..8]),
        }
    }

    /// base64url of a JSON array: the fields, then the fingerprint.
    pub fn encode(&self, fields: &[String]) -> String {
        let mut all: Vec<&str> = fields.iter().map(String::as_str).collect();
        all.push(&self.fingerprint);
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&all).expect("strings serialise"))
    }

    /// The `N` fields of a cursor made by [`Cursors::encode`] for this same list.
    pub fn decode<const N: usize>(&self, cursor: &str) -> Result<[String; N], ServiceError> {
        let bad = bad_cursor;
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let mut fields: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if fields.pop().as_deref() != Some(self.fingerprint.as_str()) {
            return Err(bad());
        }
        fields.try_into().map_err(|_| bad())
    }

    /// The offset of a page (0 for a cursor) and the cursor's fields, if any.
    pub fn start<const N: usize>(
        &self,
        position: &Position,
        per_page: u32,
    ) -> Result<(u64, Option<[String; N]>), ServiceError> {
        match position {
            Position::Page(page) => Ok((
                u64::from(page.saturating_sub(1)) * u64::from(per_page),
                None,
            )),
            Position::After(cursor) => Ok((0, Some(self.decode(cursor)?))),
        }
    }

    /// The page out of `found`, which was fetched with a limit of `per_page + 1`: the one
    /// more tells whether a next page exists, and the last item kept makes its cursor.
    pub fn listing<T>(
        &self,
        mut found: Page<T>,
        position: &Position,
        per_page: u32,
        key_of: impl Fn(&T) -> Vec<String>,
    ) -> Listing<T> {
        let more = found.items.len() > per_page as usize;
        found.items.truncate(per_page as usize);
        let next_cursor = found
            .items
            .last()
            .filter(|_| more)
            .map(|last| self.encode(&key_of(last)));
        Listing {
            items: found.items,
            page: match position {
                Position::Page(page) => Some(*page),
                Position::After(_) => None,
            },
            per_page,
            total: found.total,
            total_pages: found.total.div_ceil(u64::from(per_page)),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_list() {
        let cursors = Cursors::new("role=admin|sort=name");
        let fields = [
            "Mario. \"Rossi\"".to_owned(),
            "65f0c1e2a4b5c6d7e8f90123".to_owned(),
        ];
        let cursor = cursors.encode(&fields);
        assert_eq!(cursors.decode::<2>(&cursor).unwrap(), fields);
        let other = Cursors::new("role=user|sort=name");
        assert!(matches!(
            other.decode::<2>(&cursor),
            Err(ServiceError::BadQuery {
                parameter: "after",
                ..
            })
        ));
        // The wrong number of fields, and junk.
        assert!(cursors.decode::<3>(&cursor).is_err());
        for junk in ["", "!!", "bm90IGEgY3Vyc29y", "WyJhIl0"] {
            assert!(cursors.decode::<2>(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn one_more_item_than_a_page_makes_a_next_cursor() {
        let cursors = Cursors::new("list");
        let key = |n: &u32| vec![n.to_string()];
        let full = cursors.listing(
            Page {
                items: vec![1, 2, 3],
                total: 7,
            },
            &Position::Page(1),
            2,
            key,
        );
        assert_eq!(full.items, [1, 2]);
        assert_eq!((full.page, full.total_pages), (Some(1), 4));
        let after = cursors
            .decode::<1>(full.next_cursor.as_deref().unwrap())
            .unwrap();
        assert_eq!(after, ["2"]);
        let last = cursors.listing(
            Page {
                items: vec![7],
                total: 7,
            },
            &Position::After(full.next_cursor.unwrap()),
            2,
            key,
        );
        assert_eq!((last.page, last.next_cursor), (None, None));
    }
}
