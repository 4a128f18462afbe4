//! The Postgres test harness itself: isolation between fresh databases, and that servers
//! really go away (on drop, on panic, and when the test process exits).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use testkit::postgres::TestPostgres;

/// Set in the child process of `shared_server_stops_when_the_process_exits`.
const HELPER_ENV: &str = "FLEETHUB_PG_HARNESS_HELPER";

#[tokio::test]
async fn the_server_answers_queries() -> anyhow::Result<()> {
    let pg = TestPostgres::shared().await?;
    let mut conn = PgConnection::connect(&pg.fresh_database().await?).await?;
    let (version,): (String,) = sqlx::query_as("select version()")
        .fetch_one(&mut conn)
        .await?;
    assert!(version.starts_with("PostgreSQL "), "{version}");
    let (fsync,): (String,) = sqlx::query_as("show fsync").fetch_one(&mut conn).await?;
    assert_eq!(fsync, "on", "benchmarks need durable commits");
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_isolated() -> anyhow::Result<()> {
    let pg = TestPostgres::shared().await?;
    let (url_a, url_b) = (pg.fresh_database().await?, pg.fresh_database().await?);
    assert_ne!(url_a, url_b);

    let mut a = PgConnection::connect(&url_a).await?;
    let mut b = PgConnection::connect(&url_b).await?;
    sqlx::raw_sql("create table widget (name text primary key); insert into widget values ('x')")
        .execute(&mut a)
        .await?;

    let count: i64 = sqlx::query_scalar("select count(*) from widget")
        .fetch_one(&mut a)
        .await?;
    assert_eq!(count, 1);
    let in_b: Option<String> = sqlx::query_scalar("select to_regclass('widget')::text")
        .fetch_one(&mut b)
        .await?;
    assert_eq!(
        in_b, None,
        "a table created in one fresh database shows up in another"
    );
    // And the other way round: b can create the same name without a conflict.
    sqlx::raw_sql("create table widget (id int)")
        .execute(&mut b)
        .await?;
    Ok(())
}

#[tokio::test]
async fn dropping_stops_the_server_and_removes_its_directory() -> anyhow::Result<()> {
    let pg = tokio::task::spawn_blocking(TestPostgres::start).await??;
    let (port, dir, pid) = (pg.port(), pg.dir().to_path_buf(), pg.pid());
    // An open session must not hold up the shutdown.
    let mut conn = PgConnection::connect(&pg.url()).await?;
    sqlx::query("select 1").execute(&mut conn).await?;

    tokio::task::spawn_blocking(move || drop(pg)).await?;

    assert_gone(port, &dir, Some(pid), Duration::ZERO);
    assert!(
        sqlx::query("select 1").execute(&mut conn).await.is_err(),
        "the session survived its server"
    );
    Ok(())
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pg = TestPostgres::start().expect("start postgres");
        seen = Some((pg.port(), pg.dir().to_path_buf(), pg.pid()));
        panic!("the test fails while its server runs");
    }));
    assert!(result.is_err());
    let (port, dir, pid) = seen.expect("the server started");
    assert_gone(port, &dir, Some(pid), Duration::ZERO);
}

/// The shared server is a static and never dropped; its watchdog must stop it when the
/// process ends. Runs this test binary again as a child that starts the shared server,
/// reports it and exits, then checks the server goes away.
#[test]
fn shared_server_stops_when_the_process_exits() -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "start_the_shared_server_and_exit",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut reported = None;
    for line in stdout.lines() {
        // libtest prints the test's name on the same line first.
        let line = line?;
        if let Some((_, rest)) = line.split_once("SHARED-POSTGRES ") {
            let (port, dir) = rest.split_once(' ').expect("port and dir");
            reported = Some((port.parse::<u16>()?, PathBuf::from(dir)));
        }
    }
    assert!(child.wait()?.success(), "the helper process failed");
    let (port, dir) = reported.expect("the helper reported its server");
    // The watchdog notices at once; a fast shutdown takes well under this.
    assert_gone(port, &dir, None, Duration::from_secs(20));
    Ok(())
}

/// Not a test on its own: the child process of `shared_server_stops_when_the_process_exits`.
#[tokio::test]
#[ignore = "helper process for shared_server_stops_when_the_process_exits"]
async fn start_the_shared_server_and_exit() -> anyhow::Result<()> {
    if std::env::var_os(HELPER_ENV).is_none() {
        return Ok(());
    }
    let pg = TestPostgres::shared().await?;
    let mut conn = PgConnection::connect(&pg.url()).await?;
    sqlx::query("select 1").execute(&mut conn).await?;
    println!("SHARED-POSTGRES {} {}", pg.port(), pg.dir().display());
    // The connection stays open as the process exits, as a pool in a static would.
    std::mem::forget(conn);
    Ok(())
}

/// Asserts, within `patience`, that nothing accepts on the port, the directory is gone and
/// (when known) the postmaster process no longer exists.
fn assert_gone(port: u16, dir: &Path, pid: Option<u32>, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let accepting =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok();
        let dir_exists = dir.exists();
        let process_exists = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !accepting && !dir_exists && !process_exists {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "server still around: port {port} accepting={accepting}, {} exists={dir_exists}, \
                 postmaster {pid:?} exists={process_exists}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
