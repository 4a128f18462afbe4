//! A list's read on SQLite: a group of works per statement, joined into one row by SQLite
//! and split here.
//!
//! sqlx steps a SQLite statement on the connection's own thread and hands each row to the
//! async side over a channel, so a list of 10,000 works was some 10,000 thread wake-ups.
//! On the 2-core machine of docs/benchmarks.md a quarter of the hub's time in such lists
//! went to the scheduler, and their p99 passed 200 ms in 2 runs of 8 ("Issue 20, target
//! 3"). Joined, [`GROUP`] works cross as one row.

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::fetch_works_after;
use crate::store::{StoreError, StoredWork, list_start};

/// Works per statement: enough that the hand-offs no longer count, few enough that a
/// group's text (about 180 KB for works of 1.4 KB) stays small beside the list.
const GROUP: u32 = 128;

/// Separates the works in a group's joined texts (`char(30)` in the statements below). It
/// cannot occur in what is joined: names are DNS labels, and JSON text holds no raw
/// control character (RFC 8259: inside strings they are escaped, outside them only blanks
/// may stand). Should one occur all the same, the counts disagree and the group is read
/// again row by row.
const SEPARATOR: char = '\u{1e}';

/// One cluster's works after a name, as one row: the count and each column joined.
/// `group_concat` takes the rows in the order the ordered subquery yields them; the
/// order is checked again after the split ([`split`]).
const ONE_CLUSTER: &str = "SELECT count(*), group_concat(cluster, char(30)), \
     group_concat(name, char(30)), group_concat(object, char(30)) \
     FROM (SELECT cluster, name, object FROM works \
     WHERE cluster = $1 AND name > $2 ORDER BY name LIMIT $3)";

/// Every cluster's works after a key, as [`ONE_CLUSTER`]. A row comparison is one range
/// of the key's index; an `OR` is not.
const ALL_CLUSTERS: &str = "SELECT count(*), group_concat(cluster, char(30)), \
     group_concat(name, char(30)), group_concat(object, char(30)) \
     FROM (SELECT cluster, name, object FROM works \
     WHERE (cluster, name) > ($1, $2) ORDER BY cluster, name LIMIT $3)";

/// A list's read (see [`Store::list_works`](crate::store::Store::list_works)): a group of
/// works per statement, all in one transaction, so that the page is one snapshot of the
/// table as a single statement's rows were.
pub(super) async fn list_works(
    pool: &SqlitePool,
    cluster: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> Result<Vec<StoredWork>, StoreError> {
    let (c, n) = list_start(cluster, after);
    let mut from = (c.to_string(), n.to_string());
    let mut tx = pool.begin().await?;
    let mut works = Vec::new();
    let mut left = limit;
    while left > 0 {
        let want = left.min(GROUP);
        let group = read_group(&mut tx, cluster, &from, want).await?;
        let got = group.len() as u32;
        works.extend(group);
        match works.last() {
            Some(last) if got == want => {
                from = (last.cluster.clone(), last.name.clone());
                left -= got;
            }
            _ => break,
        }
    }
    tx.commit().await?;
    Ok(works)
}

/// Up to `want` works after `from`, read as one row when they split, else row by row.
async fn read_group(
    conn: &mut SqliteConnection,
    cluster: Option<&str>,
    from: &(String, String),
    want: u32,
) -> Result<Vec<StoredWork>, StoreError> {
    let joined = if cluster.is_some() {
        ONE_CLUSTER
    } else {
        ALL_CLUSTERS
    };
    let row = sqlx::query(joined)
        .bind(&from.0)
        .bind(&from.1)
        .bind(want as i64)
        .fetch_one(&mut *conn)
        .await?;
    let count: i64 = row.try_get(0)?;
    // Borrowed from the row: the texts are copied once, into the works.
    let texts: [Option<&str>; 3] = [row.try_get(1)?, row.try_get(2)?, row.try_get(3)?];
    if let Some(works) = split(count, texts) {
        return Ok(works);
    }
    tracing::warn!(
        from = ?from,
        "a group of stored works did not split by its separator; reading it row by row"
    );
    fetch_works_after(conn, cluster, Some((&from.0, &from.1)), want).await
}

/// The `count` works of a group from its joined clusters, names and objects (`None`
/// when the group is empty); `None` unless each column splits into exactly `count`
/// parts and the keys ascend.
fn split(count: i64, [clusters, names, objects]: [Option<&str>; 3]) -> Option<Vec<StoredWork>> {
    let count = usize::try_from(count).ok()?;
    if count == 0 {
        return Some(Vec::new());
    }
    let (clusters, names, objects) = (
        parts(clusters, count)?,
        parts(names, count)?,
        parts(objects, count)?,
    );
    let ascending = (1..count).all(|i| (clusters[i - 1], names[i - 1]) < (clusters[i], names[i]));
    ascending.then(|| {
        clusters
            .into_iter()
            .zip(names)
            .zip(objects)
            .map(|((cluster, name), object)| StoredWork {
                cluster: cluster.to_string(),
                name: name.to_string(),
                object: object.to_string(),
            })
            .collect()
    })
}

/// A joined column's `count` parts, or `None`.
fn parts(text: Option<&str>, count: usize) -> Option<Vec<&str>> {
    let parts: Vec<&str> = text?.split(SEPARATOR).collect();
    (parts.len() == count).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    fn keys(works: &[StoredWork]) -> Vec<(&str, &str, &str)> {
        works
            .iter()
            .map(|w| (w.cluster.as_str(), w.name.as_str(), w.object.as_str()))
            .collect()
    }

    #[test]
    fn a_group_splits_into_its_works_in_key_order() {
        // The third object holds the separator escaped, as JSON text does.
        let objects = r#"{"n":1}"#.to_owned() + "\u{1e}{}\u{1e}" + r#"{"s":"\u001e"}"#;
        let texts = [
            Some("a\u{1e}a\u{1e}b"),
            Some("x\u{1e}y\u{1e}a"),
            Some(&*objects),
        ];
        let works = split(3, texts).expect("splits");
        assert_eq!(
            keys(&works),
            [
                ("a", "x", r#"{"n":1}"#),
                ("a", "y", "{}"),
                ("b", "a", r#"{"s":"\u001e"}"#)
            ]
        );
        assert_eq!(split(0, [None, None, None]).expect("empty").len(), 0);
        // The statements join with the separator split on.
        let joined_with = format!("char({})", SEPARATOR as u32);
        assert!(ONE_CLUSTER.contains(&joined_with) && ALL_CLUSTERS.contains(&joined_with));
    }

    #[test]
    fn a_group_that_does_not_split_cleanly_is_refused() {
        // A raw separator inside an object (not valid JSON, but refused, not misread).
        assert!(
            split(
                2,
                [Some("a\u{1e}a"), Some("x\u{1e}y"), Some("{}\u{1e}\u{1e}{}")]
            )
            .is_none()
        );
        // Fewer parts than the count.
        assert!(split(2, [Some("a"), Some("x"), Some("{}")]).is_none());
        // Keys out of order: the joined order is not the list's.
        assert!(split(2, [Some("a\u{1e}a"), Some("y\u{1e}x"), Some("{}\u{1e}{}")]).is_none());
        assert!(split(-1, [None, None, None]).is_none());
        assert!(split(1, [None, None, None]).is_none());
    }

    /// A stored text with a raw separator (which no hub writes) is still listed as
    /// stored: its group is read again row by row, and the groups beside it are not.
    #[tokio::test]
    async fn a_text_holding_the_separator_is_listed_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        // Written past the hub, as only a hand-edited database could hold it.
        let raw = SqlitePool::connect(&url).await.unwrap();
        let odd = "{\"odd\":\"\u{1e}\"}";
        for i in 0..300 {
            let object = if i == 200 {
                odd.to_string()
            } else {
                format!("{{\"i\":{i}}}")
            };
            sqlx::query("INSERT INTO works (cluster, name, resource_version, object) VALUES ($1, $2, 1, $3)")
                .bind("c")
                .bind(format!("w{i:03}"))
                .bind(object)
                .execute(&raw)
                .await
                .unwrap();
        }
        let works = store.list_works(Some("c"), None, u32::MAX).await.unwrap();
        assert_eq!(works.len(), 300);
        for (i, w) in works.iter().enumerate() {
            assert_eq!(w.name, format!("w{i:03}"));
            let want = if i == 200 {
                odd.to_string()
            } else {
                format!("{{\"i\":{i}}}")
            };
            assert_eq!(w.object, want);
        }
    }
}
