//! Tests of the media kept and served: local files.

use super::*;
use bytes::Bytes;
use sms_gateway_core::media::Item;
use std::time::Duration;

fn item(bytes: &'static [u8], name: &str) -> Item {
    Item {
        bytes: Bytes::from_static(bytes),
        content_type: "image/png".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn local_files_are_private_and_pruned_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media");
    let local = LocalMedia::open(
        &path,
        "https://gw.example/hooks/media",
        Duration::from_secs(86_400),
        10,
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }
    let a = local.put("u@x", item(b"12345", "a.png")).await.unwrap();
    assert!(a.starts_with("https://gw.example/hooks/media/"), "{a}");
    assert!(a.ends_with("/a.png"), "{a}");
    let id = a.rsplit('/').nth(1).unwrap();
    assert!(is_id(id), "{id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.join(id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let b = local.put("u@x", item(b"123456", "b.png")).await.unwrap();
    // 11 bytes > 10: the oldest went.
    assert_eq!(local.usage(), (1, 6));
    assert!(!path.join(id).exists());
    // Reopened, the index is read back.
    drop(local);
    let again = LocalMedia::open(
        &path,
        "https://gw.example/hooks/media",
        Duration::from_secs(86_400),
        10,
    )
    .unwrap();
    assert_eq!(again.usage(), (1, 6));
    // Expired by age.
    assert_eq!(again.prune(crate::unix_now() + 2 * 86_400), 1);
    assert_eq!(again.usage(), (0, 0));
    assert!(b.contains("/b.png"));
}
