//! The read audit on both databases: reads recorded are found by patient, by member of staff and
//! by time, newest first, a page at a time; a repeat within the window is recorded once; and a
//! router served without connect info records the client as `unknown`.

use nonstop_hospital::api::{AppState, router};
use nonstop_hospital::{ReadKind, ReadQuery, Role, Staff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends;
use crate::conformance::patient;

fn staff(user_id: i64, username: &str, role: Role) -> Staff {
    Staff {
        user_id,
        username: username.into(),
        role,
        practitioner_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_found_by_patient_staff_and_time_newest_first_a_page_at_a_time() {
    for b in backends().await {
        let h = b.hospital.clone();
        let clerk = staff(41, "clerk-a", Role::Clerk);
        let doctor = staff(42, "doctor-b", Role::Doctor);
        let start = now_ms();
        h.record_read(&clerk, ReadKind::Patient, Some(101), "10.0.0.1", [101])
            .await
            .unwrap();
        h.record_read(
            &doctor,
            ReadKind::DoctorDay,
            Some(5),
            "10.0.0.2",
            [103, 101, 102, 101],
        )
        .await
        .unwrap();
        h.record_read(
            &clerk,
            ReadKind::PatientSearch,
            None,
            "10.0.0.1",
            [102, 104],
        )
        .await
        .unwrap();
        // Nobody shown, nothing recorded.
        h.record_read(&clerk, ReadKind::PatientSearch, None, "10.0.0.1", [])
            .await
            .unwrap();

        let find = |q: ReadQuery| {
            let h = h.clone();
            async move { h.read_audit(&q).await.unwrap() }
        };
        let of_101 = find(ReadQuery {
            patient_id: Some(101),
            ..ReadQuery::default()
        })
        .await;
        let seen: Vec<(&str, ReadKind, Option<i64>, &str)> = of_101
            .items
            .iter()
            .map(|e| (e.username.as_str(), e.kind, e.target, e.client.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("doctor-b", ReadKind::DoctorDay, Some(5), "10.0.0.2"),
                ("clerk-a", ReadKind::Patient, Some(101), "10.0.0.1"),
            ],
            "{}",
            b.name
        );
        assert_eq!(of_101.items[1].role, Role::Clerk);
        assert_eq!(of_101.items[1].user_id, 41);
        assert!(of_101.items[1].at >= start);
        assert_eq!(of_101.next, None);

        let by_clerk = find(ReadQuery {
            staff: Some("clerk-a".into()),
            ..ReadQuery::default()
        })
        .await;
        let mut patients: Vec<i64> = by_clerk.items.iter().map(|e| e.patient_id).collect();
        patients.sort();
        assert_eq!(patients, [101, 102, 104], "{}", b.name);

        // Six rows, two a page: newest first, each once, then no next page.
        let all = find(ReadQuery::default()).await.items;
        assert_eq!(all.len(), 6);
        assert!(
            all.windows(2)
                .all(|w| (w[0].at, w[0].id) > (w[1].at, w[1].id))
        );
        let (mut paged, mut after) = (Vec::new(), None);
        loop {
            let page = find(ReadQuery {
                limit: 2,
                after,
                ..ReadQuery::default()
            })
            .await;
            assert!(page.items.len() <= 2);
            paged.extend(page.items.iter().map(|e| e.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, all.iter().map(|e| e.id).collect::<Vec<_>>());

        // By time: `since` is inclusive, `until` exclusive.
        let newest = all[0].at;
        let since = find(ReadQuery {
            since: Some(newest),
            ..ReadQuery::default()
        })
        .await;
        assert!(!since.items.is_empty() && since.items.iter().all(|e| e.at == newest));
        let until = find(ReadQuery {
            until: Some(start),
            ..ReadQuery::default()
        })
        .await;
        assert_eq!(until.items, []);

        // Within the window, a second look the same way is not recorded again; from elsewhere
        // it is.
        h.record_read(&clerk, ReadKind::Patient, Some(101), "10.0.0.1", [101])
            .await
            .unwrap();
        h.record_read(&clerk, ReadKind::Patient, Some(101), "10.0.0.9", [101])
            .await
            .unwrap();
        let again = find(ReadQuery {
            patient_id: Some(101),
            staff: Some("clerk-a".into()),
            ..ReadQuery::default()
        })
        .await;
        let clients: Vec<&str> = again.items.iter().map(|e| e.client.as_str()).collect();
        assert_eq!(clients, ["10.0.0.9", "10.0.0.1"], "{}", b.name);

        let refused = h
            .read_audit(&ReadQuery {
                limit: 501,
                ..ReadQuery::default()
            })
            .await;
        assert!(matches!(
            refused,
            Err(nonstop_hospital::HospitalError::Invalid { field: "limit", .. })
        ));
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A router served without connect info (as a test may serve it) still records the read, with
/// the client's address `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_through_a_router_without_connect_info_is_recorded_from_unknown() {
    let b = backends().await.remove(0);
    let h = b.hospital.clone();
    let id = h
        .add_patient("clerk", &patient(7, "19800101"))
        .await
        .unwrap();
    h.add_user("admin", "clerk-c", Role::Clerk, None, "clerk-password-1")
        .await
        .unwrap();
    let (token, _) = h.login("clerk-c", "clerk-password-1").await.unwrap();
    let app = router(AppState {
        hospital: h.clone(),
        agent: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/patients/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let found = h
        .read_audit(&ReadQuery {
            patient_id: Some(id),
            ..ReadQuery::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, ReadKind, &str)> = found
        .items
        .iter()
        .map(|e| (e.username.as_str(), e.kind, e.client.as_str()))
        .collect();
    assert_eq!(seen, [("clerk-c", ReadKind::Patient, "unknown")]);
}
