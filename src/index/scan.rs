//! Prefix listings (`?list`, `?unlinked`): bounded scans of the key range.
//!
//! One [`Index::scan`] runs in one short read transaction and does a bounded amount of
//! work: it returns at most `limit` keys and examines at most `budget` records. Whatever
//! stopped it, [`Page::next`] says where to resume (inclusive), so a caller can list a
//! range of any size piece by piece: the server answers a page request with one scan
//! ([`MAX_PAGE_KEYS`], [`PAGE_BUDGET`]) and streams an unlimited listing as a sequence
//! of scans of [`CHUNK_BUDGET`] records each.
//!
//! Records are filtered by the state byte of their header ([`Record::peek_state`]);
//! the rest of a record is not decoded.

use super::{store_err, Index, IndexError, Record, State};

/// Most keys one page returns: a larger `limit` is clamped to this.
pub const MAX_PAGE_KEYS: usize = 10_000;

/// Most records one page examines. When it runs out before `limit` matching keys were
/// found (say `?unlinked` over a range of live keys), the page holds what was found and
/// `next` is the first key not examined.
pub const PAGE_BUDGET: usize = 100_000;

/// Records one chunk of an unlimited (streamed) listing examines, in its own read
/// transaction; a chunk holds at most this many keys in memory.
pub const CHUNK_BUDGET: usize = 1_000;

/// One bounded piece of a prefix listing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Matching keys in bytewise order.
    pub keys: Vec<Vec<u8>>,
    /// Where the listing goes on (pass it as the next `start`, inclusive): the first
    /// matching key not returned when `limit` keys were found, else the first key not
    /// examined when the budget ran out. `None` when the range is exhausted.
    pub next: Option<Vec<u8>>,
    /// Records examined (counted against the budget).
    pub examined: usize,
}

/// The keys a listing covers: those starting with `prefix`, from `start` (inclusive)
/// up to `end` (exclusive), in ascending order or, with `reverse`, descending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Every key listed starts with this.
    pub prefix: Vec<u8>,
    /// Lowest key listed (inclusive); `None` = from the start of the prefix.
    pub start: Option<Vec<u8>>,
    /// Keys listed are below this (exclusive); `None` = to the end of the prefix.
    pub end: Option<Vec<u8>>,
    /// Highest key first. [`Page::next`] is then where the next page *ends*: pass it
    /// as `end` (exclusive).
    pub reverse: bool,
}

impl KeyRange {
    /// The keys starting with `prefix`, from `start` on (ascending).
    pub fn prefix(prefix: &[u8], start: Option<&[u8]>) -> Self {
        KeyRange {
            prefix: prefix.to_vec(),
            start: start.map(<[u8]>::to_vec),
            end: None,
            reverse: false,
        }
    }

    /// The range that continues this one after a page that returned `next`: its
    /// `start` (ascending) or its `end` (descending) moves to `next`.
    pub fn resume(&mut self, next: Vec<u8>) {
        if self.reverse {
            self.end = Some(next);
        } else {
            self.start = Some(next);
        }
    }

    /// Lowest key (inclusive) and upper bound (exclusive; `None` = unbounded) of the
    /// range; `None` when it is empty.
    fn bounds(&self) -> Option<(&[u8], Option<Vec<u8>>)> {
        let low = match &self.start {
            Some(s) if s.as_slice() > self.prefix.as_slice() => s.as_slice(),
            _ => self.prefix.as_slice(),
        };
        let high = match (prefix_end(&self.prefix), &self.end) {
            (Some(p), Some(e)) => Some(p.min(e.clone())),
            (p, e) => p.or_else(|| e.clone()),
        };
        match &high {
            Some(h) if h.as_slice() <= low => None,
            _ => Some((low, high)),
        }
    }
}

/// The first key after every key starting with `prefix` (`None`: there is none).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Index {
    /// Lists keys starting with `prefix`, from `start` (inclusive) if later than the
    /// prefix, whose record is in state `want`: at most `limit` keys, examining at most
    /// `budget` records (both at least 1, so `next` is always past `start`). Blocking:
    /// call from a blocking thread.
    pub fn scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        want: State,
        limit: usize,
        budget: usize,
    ) -> Result<Page, IndexError> {
        self.scan_range(&KeyRange::prefix(prefix, start), want, limit, budget)
    }

    /// Lists the keys of `range` whose record is in state `want`: at most `limit` keys,
    /// examining at most `budget` records (both at least 1, so every page makes
    /// progress). Ascending, [`Page::next`] is the next `start` (inclusive); with
    /// `reverse`, the next `end` (exclusive): the last key examined. Blocking: call
    /// from a blocking thread.
    pub fn scan_range(
        &self,
        range: &KeyRange,
        want: State,
        limit: usize,
        budget: usize,
    ) -> Result<Page, IndexError> {
        use std::ops::Bound;
        let (limit, budget) = (limit.max(1), budget.max(1));
        let mut page = Page::default();
        let Some((low, high)) = range.bounds() else {
            return Ok(page);
        };
        let (_txn, table) = self.read_records()?;
        let upper = match &high {
            Some(h) => Bound::Excluded(h.as_slice()),
            None => Bound::Unbounded,
        };
        let items = table
            .range::<&[u8]>((Bound::Included(low), upper))
            .map_err(store_err)?;
        let items: Box<dyn Iterator<Item = _>> = if range.reverse {
            Box::new(items.rev())
        } else {
            Box::new(items)
        };
        // Descending, the last key examined: where the next page ends.
        let mut last: Option<Vec<u8>> = None;
        for item in items {
            let (k, v) = item.map_err(store_err)?;
            let key = k.value();
            if !key.starts_with(&range.prefix) {
                break;
            }
            if page.examined == budget {
                page.next = Some(if range.reverse {
                    last.unwrap_or_default()
                } else {
                    key.to_vec()
                });
                break;
            }
            page.examined += 1;
            let state = Record::peek_state(v.value()).map_err(|source| IndexError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            })?;
            if state != want {
                if range.reverse {
                    last = Some(key.to_vec());
                }
                continue;
            }
            if page.keys.len() == limit {
                page.next = Some(if range.reverse {
                    last.unwrap_or_default()
                } else {
                    key.to_vec()
                });
                break;
            }
            if range.reverse {
                last = Some(key.to_vec());
            }
            page.keys.push(key.to_vec());
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index with keys `/k/000`…`/k/(n-1)`: live, except unlinked where `unlinked`
    /// says so; plus `/l/x` outside the prefix.
    async fn index_with(n: u32, unlinked: impl Fn(u32) -> bool) -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let keys = (0..n).map(|i| (format!("/k/{i:03}"), unlinked(i)));
        for (key, unlink) in keys.chain([("/l/x".to_string(), false)]) {
            crate::index::testing::put_live(&index, key.as_bytes(), unlink).await;
        }
        (dir, index)
    }

    fn keys(ids: &[u32]) -> Vec<Vec<u8>> {
        ids.iter()
            .map(|i| format!("/k/{i:03}").into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn limit_and_budget_set_next() {
        let (_dir, index) = index_with(20, |i| i % 5 == 4).await;
        let scan = |start: Option<&[u8]>, want, limit, budget| {
            index.scan(b"/k/", start, want, limit, budget).unwrap()
        };
        // The limit cuts the page: next is the next matching key.
        let p = scan(None, State::Unlinked, 2, 100);
        assert_eq!(p.keys, keys(&[4, 9]));
        assert_eq!(p.next, Some(keys(&[14])[0].clone()));
        assert_eq!(p.examined, 15);
        // The budget cuts it first: next is the first key not examined.
        let p = scan(None, State::Unlinked, 2, 7);
        assert_eq!(p.keys, keys(&[4]));
        assert_eq!(p.next, Some(keys(&[7])[0].clone()));
        assert_eq!(p.examined, 7);
        // Nothing found within the budget still makes progress.
        let p = scan(Some(b"/k/005"), State::Unlinked, 1, 3);
        assert_eq!((p.keys, p.next), (vec![], Some(keys(&[8])[0].clone())));
        // The end of the prefix ends the listing, whatever is left of limit and budget.
        let p = scan(Some(b"/k/015"), State::Unlinked, 5, 5);
        assert_eq!((p.keys, p.next, p.examined), (keys(&[19]), None, 5));
        let p = scan(Some(b"/k/018"), State::Live, 1, 2);
        assert_eq!((p.keys, p.next), (keys(&[18]), None));
        // A start before the prefix starts at the prefix; zero bounds act as 1.
        let p = scan(Some(b"/a"), State::Live, 0, 0);
        assert_eq!((p.keys, p.next), (keys(&[0]), Some(keys(&[1])[0].clone())));
        assert_eq!(
            index.scan(b"/zz", None, State::Live, 5, 5).unwrap(),
            Page::default()
        );
    }

    #[tokio::test]
    async fn paging_visits_every_key_once() {
        let (_dir, index) = index_with(50, |i| i % 7 == 3 || i > 45).await;
        for want in [State::Live, State::Unlinked] {
            for (limit, budget) in [(1, 1), (3, 2), (2, 5), (4, 100), (100, 4)] {
                let (mut got, mut start, mut pages) = (Vec::new(), None, 0);
                loop {
                    let p = index
                        .scan(b"/k/", start.as_deref(), want, limit, budget)
                        .unwrap();
                    assert!(p.keys.len() <= limit && p.examined <= budget);
                    got.extend(p.keys);
                    pages += 1;
                    assert!(pages <= 51, "no progress");
                    match p.next {
                        Some(n) => start = Some(n),
                        None => break,
                    }
                }
                let expect: Vec<u32> = (0..50)
                    .filter(|&i| (i % 7 == 3 || i > 45) == (want == State::Unlinked))
                    .collect();
                assert_eq!(got, keys(&expect), "{want:?} {limit} {budget}");
            }
        }
    }

    #[tokio::test]
    async fn ranges_end_and_reverse() {
        let (_dir, index) = index_with(20, |i| i % 5 == 4).await;
        let range = |start: Option<u32>, end: Option<u32>, reverse| KeyRange {
            prefix: b"/k/".to_vec(),
            start: start.map(|i| keys(&[i])[0].clone()),
            end: end.map(|i| keys(&[i])[0].clone()),
            reverse,
        };
        let scan =
            |r: &KeyRange, limit, budget| index.scan_range(r, State::Live, limit, budget).unwrap();
        // end is exclusive, ascending and descending.
        let p = scan(&range(Some(2), Some(7), false), 100, 100);
        assert_eq!((p.keys, p.next), (keys(&[2, 3, 5, 6]), None));
        let p = scan(&range(Some(2), Some(7), true), 100, 100);
        assert_eq!((p.keys, p.next), (keys(&[6, 5, 3, 2]), None));
        // Descending pages end where the next begins: next is the next `end`.
        let p = scan(&range(None, None, true), 2, 100);
        assert_eq!(p.keys, keys(&[18, 17]));
        assert_eq!(p.next, Some(keys(&[17])[0].clone()));
        // An empty or inverted range is empty; an end past the prefix is the prefix's.
        assert_eq!(scan(&range(Some(7), Some(7), false), 5, 5), Page::default());
        assert_eq!(scan(&range(Some(9), Some(3), true), 5, 5), Page::default());
        let mut r = range(Some(18), None, false);
        r.end = Some(b"/l/zzz".to_vec());
        assert_eq!(scan(&r, 5, 5).keys, keys(&[18]));
        // Descending paging, cut by limit or budget, visits every key once.
        for want in [State::Live, State::Unlinked] {
            for (limit, budget) in [(1, 1), (3, 2), (2, 5), (100, 4)] {
                let mut r = range(Some(1), Some(19), true);
                let (mut got, mut pages) = (Vec::new(), 0);
                loop {
                    let p = index.scan_range(&r, want, limit, budget).unwrap();
                    assert!(p.keys.len() <= limit && p.examined <= budget);
                    got.extend(p.keys);
                    pages += 1;
                    assert!(pages <= 20, "no progress");
                    match p.next {
                        Some(n) => r.resume(n),
                        None => break,
                    }
                }
                let expect: Vec<u32> = (1..19)
                    .rev()
                    .filter(|&i| (i % 5 == 4) == (want == State::Unlinked))
                    .collect();
                assert_eq!(got, keys(&expect), "{want:?} {limit} {budget}");
            }
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a"), Some(b"/b".to_vec()));
        assert_eq!(prefix_end(b"/a\xff\xff"), Some(b"/b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
