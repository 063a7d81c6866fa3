//! rollcall-pg-hold: starts the test harness's PostgreSQL cluster
//! (`rollcall_tests::postgres`), prints one line saying where it is
//! (`dir=DIR pid=PID port=PORT`), then ends as its argument says: `hold`
//! sleeps until it is killed, `panic` panics, `exit` returns. The harness
//! suite kills it in each way and checks that no cluster is left behind.

use std::io::Write;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let how = std::env::args().nth(1).unwrap_or_default();
    anyhow::ensure!(
        matches!(how.as_str(), "hold" | "panic" | "exit"),
        "usage: rollcall-pg-hold hold|panic|exit"
    );
    let pg = rollcall_tests::postgres::Postgres::shared()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "dir={} pid={} port={}",
        pg.dir().display(),
        pg.pid()?,
        pg.port()
    )?;
    out.flush()?;
    drop(out);
    match how.as_str() {
        "hold" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "panic" => panic!("rollcall-pg-hold panics on purpose, as a failing test would"),
        _ => Ok(()),
    }
}
