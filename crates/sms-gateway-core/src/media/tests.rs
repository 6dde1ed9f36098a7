//! Tests of `media.rs`.

use super::*;

#[test]
fn names_are_safe_and_carry_the_types_extension() {
    let u = |s: &str| s.parse::<Uri>().unwrap();
    let twilio = u("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME123");
    assert_eq!(file_name(&twilio, 0, "image/jpeg"), "ME123.jpg");
    assert_eq!(
        file_name(
            &u("https://cdn.example/a/cat%20pic.png?x=1"),
            0,
            "image/png"
        ),
        "cat20pic.png"
    );
    assert_eq!(
        file_name(&u("https://x.example/"), 2, "video/mp4"),
        "attachment-3.mp4"
    );
    assert_eq!(
        file_name(
            &u("https://x.example/..%2F..%2Fetc"),
            0,
            "application/x-unknown"
        ),
        "2F..2Fetc"
    );
    assert_eq!(
        file_name(&u("https://x.example/.htaccess"), 0, "text/plain"),
        "htaccess.txt"
    );
    let long = format!("https://x.example/{}", "a".repeat(500));
    assert_eq!(file_name(&u(&long), 0, "image/gif").len(), 68);
}

#[test]
fn the_type_is_the_carriers_then_the_servers_then_a_sniff() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    assert_eq!(
        content_type(Some("image/jpeg"), Some("image/png"), png),
        "image/jpeg"
    );
    assert_eq!(content_type(None, Some("image/gif; x=y"), png), "image/gif");
    assert_eq!(
        content_type(
            Some("application/octet-stream"),
            Some("application/octet-stream"),
            png
        ),
        "image/png"
    );
    assert_eq!(
        content_type(Some("text/html\r\nX: y"), None, b"??"),
        "application/octet-stream"
    );
    assert_eq!(
        content_type(None, None, b"\xff\xd8\xff\xe0\0\x10JFIF"),
        "image/jpeg"
    );
}

#[test]
fn redirects_and_origins() {
    let from: Uri = "https://api.twilio.com/2010-04-01/x".parse().unwrap();
    assert_eq!(
        follow(&from, "/y/z?a=1").unwrap().to_string(),
        "https://api.twilio.com/y/z?a=1"
    );
    assert_eq!(
        follow(&from, "https://cdn.example/p").unwrap().to_string(),
        "https://cdn.example/p"
    );
    assert!(follow(&from, "//evil.example/p").is_none());
    assert!(follow(&from, "file:///etc/passwd").is_none());
    assert!(follow(&from, "relative").is_none());
    let a: Uri = "https://api.twilio.com/a".parse().unwrap();
    assert!(same_origin(
        &a,
        &"https://API.twilio.com:443/b".parse().unwrap()
    ));
    assert!(!same_origin(
        &a,
        &"http://api.twilio.com/b".parse().unwrap()
    ));
    assert!(!same_origin(
        &a,
        &"https://api.twilio.com.evil.example/b".parse().unwrap()
    ));
    assert!(!same_origin(
        &a,
        &"https://api.twilio.com:8443/b".parse().unwrap()
    ));
}

#[test]
fn private_addresses_are_recognised() {
    for private in [
        "http://localhost/a.jpg",
        "http://upload.localhost:5280/a.jpg",
        "http://127.0.0.1/a",
        "https://10.1.2.3/a",
        "http://172.16.0.1/a",
        "http://192.168.1.1/a",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/a",
        "http://0.0.0.0/a",
        "http://[::1]/a",
        "http://[fd00::1]/a",
        "http://[fe80::1]/a",
        "http://[::ffff:127.0.0.1]/a",
    ] {
        assert!(is_private_url(private), "{private}");
    }
    for public in [
        "https://upload.example.com/a.jpg",
        "https://8.8.8.8/a",
        "http://[2001:db8::1]/a",
        "https://172.32.0.1/a",
    ] {
        assert!(!is_private_url(public), "{public}");
    }
}

#[test]
fn failure_lines_name_the_item_not_the_url() {
    let m = Media::new("https://secret.example/abc", Some("image/png".into()));
    let line = failure_line(1, 3, &m, "the carrier no longer has it (HTTP 404)");
    assert_eq!(
        line,
        "[Attachment 2 of 3 (image/png) could not be fetched: the carrier no longer has it (HTTP 404).]"
    );
    assert!(!line.contains("secret"));
    assert_eq!(human_bytes(5_000_000), "5 MB");
    assert_eq!(human_bytes(300_000), "300 KB");
}
