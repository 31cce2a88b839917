//! The Go module mirror's rows: immutable module files and full sumdb tiles,
//! and the expiring answers (lists, queries, lookups, negatives), as the
//! index (`index::GoIndex`) returns them; `go_rows` is how they are reached.
//! The GOPROXY rules live in `goproxy`.

/// One of a canonical module version's immutable files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GoFile {
    Info,
    Mod,
    Zip,
}

impl GoFile {
    pub fn as_str(self) -> &'static str {
        match self {
            GoFile::Info => "info",
            GoFile::Mod => "mod",
            GoFile::Zip => "zip",
        }
    }
}

/// A stored expiring answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Unix seconds.
    pub fetched_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AnswerKey, ModuleKey, Origin, Store, TileKey, VersionKey};

    const M: ModuleKey<'static> = ModuleKey::new("example.com/m");
    const V: VersionKey<'static> = VersionKey::new("v1.0.0");

    #[tokio::test]
    async fn go_files_and_answers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.go().file(M, V, GoFile::Mod).await.unwrap(), None);
        let digest = store
            .blobs()
            .put(b"module example.com/m\n", Origin::Cached)
            .await
            .unwrap();
        store
            .go()
            .put_file(M, V, GoFile::Mod, &digest, 21)
            .await
            .unwrap();
        assert_eq!(
            store.go().file(M, V, GoFile::Mod).await.unwrap(),
            Some((digest.clone(), 21))
        );
        assert_eq!(store.go().file(M, V, GoFile::Zip).await.unwrap(), None);
        store.go().forget_file(M, V, GoFile::Mod).await.unwrap();
        assert_eq!(store.go().file(M, V, GoFile::Mod).await.unwrap(), None);

        let at = store
            .go()
            .put_answer(AnswerKey::new("list example.com/m"), 200, b"v1.0.0\n")
            .await
            .unwrap();
        let answer = store
            .go()
            .answer(AnswerKey::new("list example.com/m"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice(), answer.fetched_at),
            (200, &b"v1.0.0\n"[..], at)
        );
        store
            .go()
            .put_answer(AnswerKey::new("list example.com/m"), 404, b"gone")
            .await
            .unwrap();
        assert_eq!(
            store
                .go()
                .answer(AnswerKey::new("list example.com/m"))
                .await
                .unwrap()
                .unwrap()
                .status,
            404
        );

        store
            .go()
            .put_answer(AnswerKey::new("sumdb s/tile/8/0/001.p/3"), 200, b"abc")
            .await
            .unwrap();
        store
            .go()
            .put_answer(AnswerKey::new("sumdb s/tile/8/0/001.p/17"), 200, b"abcdef")
            .await
            .unwrap();
        store
            .go()
            .put_answer(AnswerKey::new("sumdb s/tile/8/0/0010"), 200, b"x")
            .await
            .unwrap();
        let under = store
            .go()
            .answers_under(AnswerKey::new("sumdb s/tile/8/0/001.p/"))
            .await
            .unwrap();
        let keys: Vec<&str> = under.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["sumdb s/tile/8/0/001.p/3", "sumdb s/tile/8/0/001.p/17"]
        );

        store
            .go()
            .put_tile(TileKey::new("sum.golang.org", "tile/8/0/000"), &digest, 21)
            .await
            .unwrap();
        assert_eq!(
            store
                .go()
                .tile(TileKey::new("sum.golang.org", "tile/8/0/000"))
                .await
                .unwrap(),
            Some((digest, 21))
        );
    }
}
