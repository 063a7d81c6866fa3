//! TLS to PostgreSQL, client certificates, and databases that are not
//! rollcall's.

use super::*;

/// The store's session on `db`: `user|ssl|client_dn`.
fn store_session(pg: &Postgres, url: &str) -> String {
    pg.psql_with(
        &pg.url("postgres"),
        "SELECT a.usename, s.ssl, coalesce(s.client_dn, '') FROM pg_stat_activity a
         JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = :'db' AND a.application_name = 'rollcall-store';",
        &[("db", url.rsplit_once('/').expect("a URL").1)],
    )
    .expect("look at the store's session")
}

#[test]
fn the_store_talks_tls_verified_against_its_ca_and_logs_in_with_a_client_certificate() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("tls").expect("a database");
    let store = PgStore::open(&target(pg, &url), Fence::unfenced()).expect("open over TLS");
    assert_eq!(store_session(pg, &url), "postgres|t|");
    drop(store);

    // A CA that did not sign PostgreSQL's certificate: refused, in one line
    // that names the store without the URL's password.
    let stranger = Pki::new();
    let with_password = url.replacen("postgres@", "postgres:hunter2-Secret@", 1);
    let wrong_ca = StoreConfig {
        ca: Some(stranger.ca_cert()),
        ..store_config(pg, &with_password)
    };
    let err = PgStore::open(
        &Target::new(&wrong_ca).expect("a target"),
        Fence::unfenced(),
    )
    .err()
    .expect("a server the CA did not sign is refused");
    let line = err.to_string();
    eprintln!("wrong CA: {line}");
    assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(
        line.contains(&format!("postgres://postgres@127.0.0.1:{}/", pg.port())),
        "{line}"
    );

    // The certificate role logs in with its certificate, only with it.
    let owned = pg
        .database_owned_by("tls_cert", CERT_ROLE)
        .expect("a database of the role");
    let cert = pg.client_cert(CERT_ROLE).expect("a client certificate");
    let with_cert = StoreConfig {
        cert: Some(cert.cert.clone()),
        key: Some(cert.key.clone()),
        ..store_config(pg, &owned)
    };
    let store = PgStore::open(
        &Target::new(&with_cert).expect("a target"),
        Fence::unfenced(),
    )
    .expect("open with a client certificate");
    assert_eq!(
        store_session(pg, &owned),
        format!("{CERT_ROLE}|t|/CN={CERT_ROLE}")
    );
    drop(store);
    let err = PgStore::open(&target(pg, &owned), Fence::unfenced())
        .err()
        .expect("the role without its certificate is refused");
    let line = err.to_string();
    assert!(
        line.contains("certificate") && line.contains(CERT_ROLE),
        "{line}"
    );
}

#[test]
fn a_database_of_someone_else_or_of_a_newer_rollcall_is_refused() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("foreign").expect("a database");
    pg.psql(
        &url,
        "CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1);",
    )
    .expect("someone else's table");
    let public_tables =
        "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public';";
    let before = pg.psql(&url, public_tables).expect("list tables");
    assert_eq!(before, "invoices");
    match PgStore::open(&target(pg, &url), Fence::unfenced()) {
        Err(StoreError::Foreign { why, .. }) => assert!(why.contains("invoices"), "{why}"),
        Err(other) => panic!("expected Foreign, got {other:?}"),
        Ok(_) => panic!("a foreign database was opened"),
    }
    assert_eq!(
        pg.psql(&url, public_tables).expect("list tables"),
        before,
        "no table was made in it"
    );

    let url = pg.database("newer").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    pg.psql(&url, "UPDATE rollcall_schema SET version = version + 1;")
        .expect("a newer schema");
    let known: i64 = pg
        .psql(&url, "SELECT version - 1 FROM rollcall_schema;")
        .expect("version")
        .parse()
        .expect("a number");
    let err = PgStore::open(&target, Fence::unfenced())
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(err, StoreError::Version { found, known: k, .. } if found == known + 1 && k == known),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("run a newer rollcall-server"),
        "{err}"
    );
    assert!(err.is_refusal(), "an operator must act: {err}");
}
